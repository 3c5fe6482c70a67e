/**
 * A trusted issuer, prepared for verification: its header policy, claim rules, key set and HMAC verifier.
 * Configuration mistakes the schema cannot see are reported here, once, as `ERR_CONFIG_INVALID`.
 */

import { type Algorithm, type IssuerConfig, issuerProblems } from "../config/issuer.js";
import { OnbehalfError } from "../errors.js";
import type { ClaimRules } from "./claims.js";
import { type HeaderPolicy, normalizeTyp } from "./header.js";
import { IssuerKeySet } from "./jwks.js";
import { createJwtVerifier, headerPolicy, type JwtSignatureVerifier } from "./jws.js";
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
  const problems = issuerProblems(config);
  if (problems.length > 0) {
    throw invalid(problems.map((p) => `${p.field}: ${p.message} (fix: ${p.fix})`).join("; "));
  }

  const hsAlgorithms = config.algorithms.filter((a) => a.startsWith("HS"));
  const asymmetric = config.algorithms.filter((a) => !a.startsWith("HS")) as Algorithm[];
  let hmac: JwtSignatureVerifier | null = null;
  if (config.secret !== undefined && hsAlgorithms.length > 0) {
    hmac = createJwtVerifier(Buffer.from(config.secret, "utf8"), hsAlgorithms);
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
