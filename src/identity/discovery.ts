/**
 * OIDC discovery (OpenID Connect Discovery 1.0 §4) with the RFC 8414 fallback: find an issuer's `jwks_uri`,
 * and refuse a metadata document whose `issuer` is not exactly the configured one (RFC 8414 §3.3: it would
 * let one issuer's metadata stand in for another's).
 */

import { isFetchableUrl } from "../config/issuer.js";
import { OnbehalfError } from "../errors.js";
import { fetchJsonObject } from "./http.js";

/** The metadata fields onbehalf uses. */
export interface IssuerMetadata {
  readonly issuer: string;
  readonly jwks_uri: string;
  /** Where the document came from. */
  readonly source: string;
}

/**
 * The two well-known URLs for an issuer, in the order they are tried:
 * 1. OIDC: the issuer with any trailing `/` removed, plus `/.well-known/openid-configuration`;
 * 2. RFC 8414: `/.well-known/oauth-authorization-server` inserted between the host and the issuer's path.
 *
 * @example
 * discoveryUrls("https://idp.example/tenant/");
 * // ["https://idp.example/tenant/.well-known/openid-configuration",
 * //  "https://idp.example/.well-known/oauth-authorization-server/tenant"]
 */
export function discoveryUrls(issuer: string): [string, string] {
  const url = new URL(issuer);
  const path = url.pathname.replace(/\/+$/, "");
  return [
    `${url.origin}${path}/.well-known/openid-configuration`,
    `${url.origin}/.well-known/oauth-authorization-server${path}`,
  ];
}

/** Options of {@link discover}. */
export interface DiscoverOptions {
  readonly fetch: typeof fetch;
  readonly allowInsecureHttp: boolean;
  readonly signal?: AbortSignal;
}

/**
 * Fetch an issuer's metadata and return its `jwks_uri`. Tries OIDC discovery, then RFC 8414; fails with
 * `ERR_DISCOVERY_FAILED` when neither answers with a usable document, or when a document names another
 * issuer.
 *
 * @example
 * const { jwks_uri } = await discover("https://tenant.eu.auth0.com/", { fetch, allowInsecureHttp: false });
 */
export async function discover(issuer: string, options: DiscoverOptions): Promise<IssuerMetadata> {
  let urls: [string, string];
  try {
    urls = discoveryUrls(issuer);
  } catch (e) {
    throw new OnbehalfError(
      "ERR_DISCOVERY_FAILED",
      `issuer "${issuer}" is not a URL, so it cannot be discovered: set jwks_uri or inline jwks`,
      { cause: e },
    );
  }
  const failures: string[] = [];
  for (const url of urls) {
    let doc: Record<string, unknown>;
    try {
      doc = await fetchJsonObject(url, {
        fetch: options.fetch,
        what: "issuer metadata",
        code: "ERR_DISCOVERY_FAILED",
        allowInsecureHttp: options.allowInsecureHttp,
        ...(options.signal ? { signal: options.signal } : {}),
      });
    } catch (e) {
      failures.push((e as Error).message);
      continue;
    }
    if (doc["issuer"] !== issuer) {
      throw new OnbehalfError(
        "ERR_DISCOVERY_FAILED",
        `the metadata at ${url} names issuer ${JSON.stringify(doc["issuer"])}, not the configured "${issuer}": ` +
          "the configured issuer must match the IdP's exactly (mind the trailing slash)",
      );
    }
    const jwksUri = doc["jwks_uri"];
    let parsed: URL | undefined;
    try {
      parsed = typeof jwksUri === "string" ? new URL(jwksUri) : undefined;
    } catch {
      parsed = undefined;
    }
    if (typeof jwksUri !== "string" || parsed === undefined) {
      throw new OnbehalfError("ERR_DISCOVERY_FAILED", `the metadata at ${url} has no valid jwks_uri`);
    }
    if (!isFetchableUrl(parsed, options.allowInsecureHttp)) {
      throw new OnbehalfError(
        "ERR_DISCOVERY_FAILED",
        `the metadata at ${url} gives jwks_uri ${jwksUri}, which is not https (allow_insecure_http is off)`,
      );
    }
    return { issuer, jwks_uri: jwksUri, source: url };
  }
  throw new OnbehalfError(
    "ERR_DISCOVERY_FAILED",
    `discovery failed for issuer "${issuer}": ${failures.join("; ")}`,
  );
}
