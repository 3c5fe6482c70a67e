/**
 * The signature layer: fast-jwt's synchronous verifier, built once per key with that concrete key (never the
 * asynchronous key-callback form, never fast-jwt's own cache), and the mapping of its errors onto our codes.
 *
 * Also `verifyJws`, an internal function that runs our header checks and the very signature primitive
 * fast-jwt's verifier delegates to, on an arbitrary payload: the Wycheproof JWS vectors sign payloads such
 * as `foo` that are not JWT claim sets, so they can only be checked at this layer.
 */
import { createSecretKey, type KeyObject } from "node:crypto";
import { createRequire } from "node:module";
import { createVerifier } from "fast-jwt";
import { type Algorithm, hmacSecretProblem } from "../config/issuer.js";
import { type ErrorCode, OnbehalfError } from "../errors.js";
import { checkHeader, decodeJsonObject, type HeaderPolicy, type JoseHeader, splitCompact } from "./header.js";
import { importJwk, indexKeys, selectKey, type VerificationKey } from "./jwk.js";

/** Verifies a token's signature (and decodes its payload); throws `OnbehalfError`. */
export type JwtSignatureVerifier = (token: string) => Record<string, unknown>;

/**
 * Build the synchronous fast-jwt verifier for one key: `pem` (SPKI) for a public key, the raw secret for HMAC.
 * Time claims are ignored here (we check them against our own clock); fast-jwt's cache is off (ours is in
 * front of it).
 *
 * @example
 * const verify = createJwtVerifier(key.pem, ["RS256"]);
 * const payload = verify(token);
 */
export function createJwtVerifier(
  key: string | Buffer,
  algorithms: readonly Algorithm[],
): JwtSignatureVerifier {
  const verifier = createVerifier({
    key,
    algorithms: [...algorithms],
    cache: false,
    complete: false,
    ignoreExpiration: true,
    ignoreNotBefore: true,
  });
  return (token) => {
    try {
      return verifier(token) as Record<string, unknown>;
    } catch (e) {
      throw fromFastJwtError(e);
    }
  };
}

const FAST_JWT_CODES: Readonly<Record<string, readonly [ErrorCode, string]>> = {
  FAST_JWT_INVALID_SIGNATURE: ["ERR_TOKEN_SIGNATURE_INVALID", "the token signature is invalid"],
  FAST_JWT_MISSING_SIGNATURE: ["ERR_TOKEN_SIGNATURE_INVALID", "the token has no signature"],
  FAST_JWT_VERIFY_ERROR: [
    "ERR_TOKEN_SIGNATURE_INVALID",
    "the token signature could not be checked (malformed)",
  ],
  FAST_JWT_MALFORMED: ["ERR_TOKEN_MALFORMED", "the token is not a well-formed JWT"],
  FAST_JWT_INVALID_PAYLOAD: ["ERR_TOKEN_MALFORMED", "the token payload is not a JSON object"],
  FAST_JWT_INVALID_ALGORITHM: [
    "ERR_TOKEN_ALG_NOT_ALLOWED",
    "the token algorithm is not allowed for this key",
  ],
  FAST_JWT_INVALID_CRIT_HEADER: ["ERR_TOKEN_HEADER_REJECTED", "the token crit header is not accepted"],
  FAST_JWT_INVALID_TYPE: ["ERR_TOKEN_TYPE_INVALID", "the token type is not accepted"],
  FAST_JWT_EXPIRED: ["ERR_TOKEN_EXPIRED", "the token has expired"],
  FAST_JWT_INACTIVE: ["ERR_TOKEN_NOT_YET_VALID", "the token is not valid yet"],
  FAST_JWT_INVALID_CLAIM_TYPE: ["ERR_TOKEN_CLAIM_INVALID", "a token claim has the wrong type"],
  FAST_JWT_INVALID_CLAIM_VALUE: ["ERR_TOKEN_CLAIM_INVALID", "a token claim has a value that is not allowed"],
  FAST_JWT_MISSING_REQUIRED_CLAIM: ["ERR_TOKEN_CLAIM_INVALID", "a required token claim is missing"],
  FAST_JWT_INVALID_KEY: ["ERR_JWKS_NO_MATCHING_KEY", "the issuer's key cannot verify this token"],
  FAST_JWT_MISSING_KEY: ["ERR_JWKS_NO_MATCHING_KEY", "no key to verify this token"],
  FAST_JWT_KEY_FETCHING_ERROR: ["ERR_JWKS_NO_MATCHING_KEY", "no key to verify this token"],
};

/**
 * Map anything fast-jwt throws onto an `OnbehalfError` (the original kept as `cause`). An error we do not
 * recognise still fails closed, as an invalid signature.
 *
 * @example
 * try { verifier(token) } catch (e) { throw fromFastJwtError(e) }
 */
export function fromFastJwtError(e: unknown): OnbehalfError {
  if (e instanceof OnbehalfError) return e;
  const code = typeof e === "object" && e !== null ? (e as { code?: unknown }).code : undefined;
  const mapped = typeof code === "string" ? FAST_JWT_CODES[code] : undefined;
  if (mapped) return new OnbehalfError(mapped[0], mapped[1], { cause: e });
  return new OnbehalfError("ERR_TOKEN_SIGNATURE_INVALID", "the token could not be verified", { cause: e });
}

/**
 * Header policy for a list of algorithms: HS* stays disabled unless the issuer has a secret.
 *
 * @example
 * const policy = headerPolicy(["RS256", "HS256"], false, null); // HS256 disabled
 */
export function headerPolicy(
  algorithms: readonly string[],
  hasSecret: boolean,
  requireTyp: string | null,
): HeaderPolicy {
  const allowed = new Set<string>();
  const disabled = new Map<string, string>();
  for (const alg of algorithms) {
    if (alg.startsWith("HS") && !hasSecret) {
      disabled.set(
        alg,
        `alg "${alg}" is listed for this issuer but no \`secret\` is configured, so it is refused`,
      );
    } else {
      allowed.add(alg);
    }
  }
  return { algorithms: allowed, disabled, requireTyp };
}

type VerifySignature = (
  algorithm: string,
  key: KeyObject,
  input: string | Buffer,
  signature: string,
) => boolean;

/**
 * fast-jwt's signature primitive: the function its verifier calls once it has a key. Loaded from fast-jwt's
 * module file (not part of its typed API), for the JWS layer and the Wycheproof tests only. Returns false for
 * a bad signature and may throw (a malformed one): treat both as "invalid".
 *
 * @example
 * fastJwtVerifySignature("ES256", key.keyObject, "header.payload", signatureBase64url); // true | false
 */
export const fastJwtVerifySignature: VerifySignature = (
  createRequire(import.meta.url)("fast-jwt/src/crypto.js") as { verifySignature: VerifySignature }
).verifySignature;

/** Key material for {@link verifyJws}: an issuer's key set and/or its HMAC secret. */
export interface JwsKeyMaterial {
  readonly jwks?: { readonly keys: readonly unknown[] };
  readonly secret?: string | Uint8Array;
}

/** A JWS whose header and signature checked out; the payload is returned as bytes, unparsed. */
export interface VerifiedJws {
  readonly header: JoseHeader;
  readonly alg: string;
  readonly payload: Buffer;
  /** The key that verified it; null for HMAC. */
  readonly key: VerificationKey | null;
}

/**
 * Internal (not public API): verify a compact JWS with exactly our header checks, key import and key
 * selection, and fast-jwt's signature primitive, without any claim checks and without requiring the payload
 * to be JSON. `createIdentity` runs the same checks and then fast-jwt's full verifier plus the claims.
 *
 * @example
 * const { payload } = verifyJws(token, { jwks: { keys: [publicJwk] } }, ["ES256"]);
 */
export function verifyJws(
  token: string,
  material: JwsKeyMaterial,
  algorithms: readonly Algorithm[],
  options: { readonly maxTokenBytes?: number; readonly requireTyp?: string | null } = {},
): VerifiedJws {
  const secret = typeof material.secret === "string" ? Buffer.from(material.secret, "utf8") : material.secret;
  const policy = headerPolicy(algorithms, secret !== undefined, options.requireTyp ?? null);
  const parts = splitCompact(token, options.maxTokenBytes ?? 16384, true);
  const header = decodeJsonObject(token, 0, parts.dot1, "header");
  const { alg, kid } = checkHeader(header, policy);
  const input = token.slice(0, parts.dot2);
  const signature = token.slice(parts.dot2 + 1);
  if (signature === "") throw new OnbehalfError("ERR_TOKEN_SIGNATURE_INVALID", "the token has no signature");

  let keyObject: KeyObject;
  let key: VerificationKey | null = null;
  if (alg.startsWith("HS")) {
    if (secret === undefined) throw new OnbehalfError("ERR_TOKEN_ALG_NOT_ALLOWED", `no secret for ${alg}`);
    const problem = hmacSecretProblem(secret, [alg]);
    if (problem !== null) throw new OnbehalfError("ERR_CONFIG_INVALID", problem);
    keyObject = createSecretKey(secret);
  } else {
    const entries: { key: VerificationKey }[] = [];
    for (const jwk of material.jwks?.keys ?? []) {
      const r = importJwk(jwk);
      if ("key" in r) entries.push({ key: r.key });
    }
    const selection = selectKey(indexKeys(entries), kid, alg);
    if (!("entry" in selection)) {
      throw new OnbehalfError(
        selection.problem === "wrong-type" ? "ERR_TOKEN_ALG_NOT_ALLOWED" : "ERR_JWKS_NO_MATCHING_KEY",
        selection.detail,
      );
    }
    key = selection.entry.key;
    keyObject = key.keyObject;
  }

  let ok: boolean;
  try {
    ok = fastJwtVerifySignature(alg, keyObject, input, signature);
  } catch (e) {
    throw fromFastJwtError(e);
  }
  if (!ok) throw new OnbehalfError("ERR_TOKEN_SIGNATURE_INVALID", "the token signature is invalid");
  return { header, alg, payload: Buffer.from(token.slice(parts.dot1 + 1, parts.dot2), "base64url"), key };
}
