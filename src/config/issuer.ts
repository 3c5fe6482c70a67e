/**
 * A trusted issuer's configuration (`issuers[]`), and the one place its settings are checked beyond their
 * shape: the loader reports these problems with file, line and field; the identity verifier refuses an issuer
 * built in code with the same words.
 */
import { z } from "zod";
import { nonEmpty } from "./fields.js";

/** JWS algorithms onbehalf can verify. `none` is not among them and never will be. */
export const ALGORITHMS = [
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "ES512",
  "EdDSA",
  "HS256",
  "HS384",
  "HS512",
] as const;
export type Algorithm = (typeof ALGORITHMS)[number];
export const DEFAULT_ALGORITHMS: Algorithm[] = ["RS256", "ES256", "EdDSA", "PS256"];

export const PRESETS = ["auth0", "okta", "entra", "cognito", "keycloak", "google", "generic"] as const;
export type Preset = (typeof PRESETS)[number];

const ClaimPath = nonEmpty;
const ClaimPaths = z.union([ClaimPath, z.array(ClaimPath).min(1)]);

/** Where each principal field comes from in the token; a preset fills what is left out. */
export const ClaimsMapping = z.strictObject({
  subject: ClaimPath.optional(),
  tenant: z.union([ClaimPath, z.strictObject({ value: nonEmpty })]).optional(),
  scopes: ClaimPaths.optional(),
  email: ClaimPath.optional(),
  roles: ClaimPaths.optional(),
});
export type ClaimsMapping = z.output<typeof ClaimsMapping>;

export const IssuerConfig = z.strictObject({
  issuer: nonEmpty,
  audience: z.union([nonEmpty, z.array(nonEmpty).min(1)]),
  preset: z.enum(PRESETS).default("generic"),
  jwks_uri: z.string().url().nullable().default(null),
  /** Keys given inline instead of fetched (air-gapped setups, the development issuer); excludes jwks_uri. */
  jwks: z.strictObject({ keys: z.array(z.record(z.string(), z.unknown())).min(1) }).optional(),
  algorithms: z.array(z.enum(ALGORITHMS)).min(1).default(DEFAULT_ALGORITHMS),
  require_typ: nonEmpty.nullable().default(null),
  claims: ClaimsMapping.default({}),
  /** Prefix for `user` ids from this issuer; defaults to `<issuer>#` when several issuers are trusted. */
  user_prefix: z.string().optional(),
  clock_tolerance_seconds: z.number().min(0).max(300).default(30),
  max_token_bytes: z.number().int().min(512).max(65536).default(16384),
  jwks_cache_seconds: z.number().min(0).default(600),
  /** At least 1: without a cooldown, every token with a made-up kid would make onbehalf fetch the JWKS. */
  jwks_cooldown_seconds: z.number().min(1).default(30),
  /** Shared secret for HS* algorithms; only used when `algorithms` lists an HS* algorithm. */
  secret: nonEmpty.optional(),
  /** Allow an `http://` issuer or JWKS URL that is not on loopback. Only for test networks. */
  allow_insecure_http: z.boolean().default(false),
});
export type IssuerConfig = z.output<typeof IssuerConfig>;

/** Minimum HMAC key length per algorithm, in bytes: the hash size (RFC 7518 §3.2). */
export const HMAC_MIN_BYTES: Readonly<Record<string, number>> = { HS256: 32, HS384: 48, HS512: 64 };

/**
 * Why `secret` is too short for one of `algorithms`, or null.
 *
 * @example
 * hmacSecretProblem(Buffer.from("short"), ["HS256"]); // "… at least 32 bytes …"
 */
export function hmacSecretProblem(secret: Uint8Array, algorithms: readonly string[]): string | null {
  for (const alg of algorithms) {
    const min = HMAC_MIN_BYTES[alg];
    if (min !== undefined && secret.length < min) {
      return `the secret is ${secret.length} bytes; ${alg} needs at least ${min} (RFC 7518 §3.2)`;
    }
  }
  return null;
}

const LOOPBACK_HOSTS = new Set(["127.0.0.1", "[::1]", "localhost"]);

/**
 * True when `url` may be fetched for keys or metadata: `https:`, or `http:` on a loopback host (127.0.0.1, ::1,
 * localhost) or with `allowInsecureHttp`.
 *
 * @example
 * isFetchableUrl(new URL("http://127.0.0.1:8080/jwks"), false); // true
 */
export function isFetchableUrl(url: URL, allowInsecureHttp: boolean): boolean {
  if (url.protocol === "https:") return true;
  if (url.protocol !== "http:") return false;
  return allowInsecureHttp || LOOPBACK_HOSTS.has(url.hostname);
}

/** A problem with one issuer's settings: the field, what is wrong, how to fix it. */
export interface IssuerProblem {
  readonly field: keyof IssuerConfig;
  readonly message: string;
  readonly fix: string;
}

/**
 * What is wrong with an issuer's settings beyond their shape, the one place these rules live: the loader
 * reports them with file and line, the verifier refuses an issuer built in code with the same words.
 *
 * @example
 * issuerProblems(IssuerConfig.parse({ issuer: "http://idp.corp", audience: "api" }))[0]?.message;
 * // "http://idp.corp is plain http on a non-loopback host: keys fetched from it could be forged"
 */
export function issuerProblems(iss: IssuerConfig): IssuerProblem[] {
  const out: IssuerProblem[] = [];
  if (iss.jwks !== undefined && iss.jwks_uri !== null) {
    out.push({
      field: "jwks",
      message: "give either jwks (inline keys) or jwks_uri, not both",
      fix: "keep one of them",
    });
  }
  for (const field of ["issuer", "jwks_uri"] as const) {
    const url = parsedUrl(iss[field]);
    if (url?.protocol === "http:" && !isFetchableUrl(url, iss.allow_insecure_http)) {
      out.push({
        field,
        message: `${iss[field]} is plain http on a non-loopback host: keys fetched from it could be forged`,
        fix: "use https, or set allow_insecure_http: true on a test network",
      });
    }
  }
  const issuerUrl = parsedUrl(iss.issuer);
  if (
    iss.jwks === undefined &&
    iss.jwks_uri === null &&
    (issuerUrl === null || (issuerUrl.protocol !== "https:" && issuerUrl.protocol !== "http:"))
  ) {
    out.push({
      field: "issuer",
      message: "the issuer is not an https URL, so its keys cannot be discovered",
      fix: "set jwks_uri or inline jwks",
    });
  }
  const hs = iss.algorithms.filter((a) => a.startsWith("HS"));
  if (hs.length > 0 && iss.secret === undefined) {
    const alone = hs.length === iss.algorithms.length;
    out.push({
      field: "algorithms",
      message: `${alone ? "no usable algorithm: " : ""}${hs.join(", ")} needs a shared secret`,
      fix: "add secret: ${YOUR_SECRET_ENV}, or remove the HS algorithms (asymmetric keys are safer)",
    });
  }
  const short = iss.secret === undefined ? null : hmacSecretProblem(Buffer.from(iss.secret, "utf8"), hs);
  if (short !== null) out.push({ field: "secret", message: short, fix: "use a longer random secret" });
  return out;
}

function parsedUrl(value: string | null): URL | null {
  if (value === null) return null;
  try {
    return new URL(value);
  } catch {
    return null;
  }
}
