/**
 * A trusted issuer, prepared for verification: its header policy, claim rules, key set and HMAC verifier.
 * Configuration mistakes the schema cannot see are reported here, once, as `ERR_CONFIG_INVALID`.
 */
import { OnbehalfError } from "../errors.js";
import type { Algorithm, IssuerConfig } from "../policy/schema.js";
import type { ClaimRules } from "./claims.js";
import { type HeaderPolicy, normalizeTyp } from "./header.js";
import { isFetchableUrl } from "./http.js";
import { IssuerKeySet } from "./jwks.js";
import { createJwtVerifier, headerPolicy, hmacSecretProblem, type JwtSignatureVerifier } from "./jws.js";
import { resolveClaimMapping } from "./presets.js";

/** Everything the verifier needs about one issuer. */
export interface IssuerContext {
  readonly config: IssuerConfig;
  readonly maxTokenBytes: number;
  readonly header: HeaderPolicy;
  readonly rules: ClaimRules;
  readonly keys: IssuerKeySet;
  /** fast-jwt verifier over the issuer's secret, when an HS* algorithm is listed and a secret is set. */
  readonly hmac: JwtSignatureVerifier | null;
  /**
   * Header segments that passed the header checks for this issuer, with their alg and kid: an issuer signs
   * every token with one of a few headers, so decoding and checking each is wasted work. Bounded.
   */
  readonly checkedHeaders: Map<string, CheckedHeader>;
}

/** The outcome of a passed header check. */
export interface CheckedHeader {
  readonly alg: string;
  readonly kid: string | undefined;
}

/** Shared services for {@link prepareIssuer}. */
export interface IssuerDeps {
  /** How many issuers are trusted (the default user prefix depends on it). */
  readonly issuerCount: number;
  readonly fetch: typeof fetch;
  readonly now: () => number;
  readonly signal: AbortSignal;
  readonly onKeysRemoved: (issuer: string) => void;
  /** Its tokens are onbehalf's own delegation tokens: they carry the human's first issuer (`obo_issuer`). */
  readonly carrier?: boolean;
}

/**
 * Prepare one validated issuer config.
 *
 * @example
 * const ctx = prepareIssuer(IssuerConfig.parse({ issuer, audience }), { issuerCount: 1, fetch, now, signal, onKeysRemoved });
 */
export function prepareIssuer(config: IssuerConfig, deps: IssuerDeps): IssuerContext {
  const where = `issuer "${config.issuer}"`;
  const invalid = (why: string) => new OnbehalfError("ERR_CONFIG_INVALID", `${where}: ${why}`);
  if (config.jwks !== undefined && config.jwks_uri !== null) {
    throw invalid("set either jwks (inline keys) or jwks_uri, not both");
  }
  if (config.jwks_uri !== null && !fetchable(config.jwks_uri, config.allow_insecure_http)) {
    throw invalid(
      `jwks_uri ${config.jwks_uri} must be https (http only on loopback or with allow_insecure_http)`,
    );
  }
  if (
    config.jwks === undefined &&
    config.jwks_uri === null &&
    !fetchable(config.issuer, config.allow_insecure_http)
  ) {
    throw invalid(
      "the issuer is not an https URL, so its keys cannot be discovered: set jwks_uri or inline jwks" +
        " (or allow_insecure_http for a test network)",
    );
  }

  const hsAlgorithms = config.algorithms.filter((a) => a.startsWith("HS"));
  const asymmetric = config.algorithms.filter((a) => !a.startsWith("HS")) as Algorithm[];
  let hmac: JwtSignatureVerifier | null = null;
  if (config.secret !== undefined && hsAlgorithms.length > 0) {
    const secret = Buffer.from(config.secret, "utf8");
    const problem = hmacSecretProblem(secret, hsAlgorithms);
    if (problem !== null) throw invalid(`${problem}; use a longer random secret`);
    hmac = createJwtVerifier(secret, hsAlgorithms);
  }
  if (asymmetric.length === 0 && hmac === null) {
    throw invalid("no usable algorithm: HS* needs a secret, and no asymmetric algorithm is listed");
  }

  const keys = new IssuerKeySet({
    config,
    algorithms: asymmetric,
    fetch: deps.fetch,
    now: deps.now,
    signal: deps.signal,
    onKeysRemoved: () => deps.onKeysRemoved(config.issuer),
  });
  if (!keys.remote && keys.size === 0 && hmac === null) {
    throw invalid(`none of the inline jwks keys is usable: ${keys.skipped.join("; ")}`);
  }

  const audiences = typeof config.audience === "string" ? [config.audience] : config.audience;
  return {
    config,
    maxTokenBytes: config.max_token_bytes,
    header: headerPolicy(
      config.algorithms,
      hmac !== null,
      config.require_typ === null ? null : normalizeTyp(config.require_typ),
    ),
    rules: {
      issuer: config.issuer,
      audiences: new Set(audiences),
      mapping: resolveClaimMapping(config.preset, config.claims),
      toleranceMs: config.clock_tolerance_seconds * 1000,
      userPrefix: config.user_prefix ?? (deps.issuerCount > 1 ? `${config.issuer}#` : ""),
      ...(deps.carrier === true ? { originClaim: "obo_issuer" } : {}),
    },
    keys,
    hmac,
    checkedHeaders: new Map(),
  };
}

function fetchable(url: string, allowInsecureHttp: boolean): boolean {
  try {
    return isFetchableUrl(new URL(url), allowInsecureHttp);
  } catch {
    return false;
  }
}
