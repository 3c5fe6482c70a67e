/**
 * Cheap checks on a compact JWS before any cryptography: size, shape, canonical base64url, and a JOSE header
 * that names an allowed algorithm and asks for nothing we refuse (RFC 8725 §3.1, §3.11; RFC 7515 §4.1.11).
 */
import { OnbehalfError } from "../errors.js";

/** The three segments of a compact JWS, as offsets into the token (no copies). */
export interface CompactParts {
  readonly token: string;
  /** Index of the first `.`. */
  readonly dot1: number;
  /** Index of the second `.`. */
  readonly dot2: number;
}

/** A decoded JOSE header: a JSON object whose members we have not trusted yet. */
export type JoseHeader = Readonly<Record<string, unknown>>;

/** What the header must satisfy, per issuer. */
export interface HeaderPolicy {
  /** Algorithms accepted, exact and case-sensitive. HS* only when the issuer also has a secret. */
  readonly algorithms: ReadonlySet<string>;
  /** Algorithms listed in the config but unusable (HS* without a secret), for a precise message. */
  readonly disabled: ReadonlyMap<string, string>;
  /** Normalized required `typ` (lower case, no `application/`), or null. */
  readonly requireTyp: string | null;
}

/** Header parameters that would take a key (or a key location) from the token itself, or change the input. */
const REJECTED_PARAMETERS = ["jwk", "jku", "x5u", "x5c", "b64"] as const;

/** Value of each base64url character; 255 for anything else. */
const B64URL = new Uint8Array(128).fill(255);
for (const [i, c] of [..."ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"].entries()) {
  B64URL[c.charCodeAt(0)] = i;
}

/**
 * Split a compact JWS into its three segments after the size limit. The header segment must be non-empty
 * canonical unpadded base64url (RFC 7515 §2, RFC 4648 §3.3, §3.5): no other characters, no impossible
 * length, no non-zero bits after the last byte. The payload and signature segments get the same length and
 * last-character checks; their alphabet is checked here too when `strict`, and otherwise by fast-jwt's
 * decoder, which applies the same base64url alphabet test before it decodes anything (no need to scan the
 * ~1 KB twice on the hot path).
 *
 * @example
 * const parts = splitCompact(token, 16384, true);
 */
export function splitCompact(token: string, maxBytes: number, strict: boolean): CompactParts {
  assertTokenSize(token, maxBytes);
  const dot1 = token.indexOf(".");
  const dot2 = dot1 === -1 ? -1 : token.indexOf(".", dot1 + 1);
  if (dot1 <= 0 || dot2 === -1 || token.indexOf(".", dot2 + 1) !== -1) {
    throw new OnbehalfError(
      "ERR_TOKEN_MALFORMED",
      "the token is not a compact JWS (header.payload.signature)",
    );
  }
  if (!ALPHABET.test(token.slice(0, dot1)) || !hasCanonicalEnd(token, 0, dot1)) throw segmentError("header");
  if ((strict && !ALPHABET.test(token.slice(dot1 + 1, dot2))) || !hasCanonicalEnd(token, dot1 + 1, dot2)) {
    throw segmentError("payload");
  }
  if ((strict && !ALPHABET.test(token.slice(dot2 + 1))) || !hasCanonicalEnd(token, dot2 + 1, token.length)) {
    throw segmentError("signature");
  }
  return { token, dot1, dot2 };
}

/**
 * Refuse a token longer than `maxBytes` (`ERR_TOKEN_TOO_LARGE`). Length in UTF-16 units equals bytes for
 * the only characters a compact JWS may contain; anything else fails the base64url check.
 *
 * @example
 * assertTokenSize(token, 16384);
 */
export function assertTokenSize(token: string, maxBytes: number): void {
  if (token.length > maxBytes) {
    throw new OnbehalfError(
      "ERR_TOKEN_TOO_LARGE",
      `the token is ${token.length} bytes, over the limit of ${maxBytes} (max_token_bytes)`,
    );
  }
}

function segmentError(which: string): OnbehalfError {
  return new OnbehalfError("ERR_TOKEN_MALFORMED", `the token ${which} is not canonical unpadded base64url`);
}

const ALPHABET = /^[A-Za-z0-9_-]*$/;

/**
 * True when `segment` is canonical unpadded base64url.
 *
 * @example
 * isCanonicalBase64Url("AA"); // true ("AB" is false: its unused bits are not zero)
 */
export function isCanonicalBase64Url(segment: string): boolean {
  return ALPHABET.test(segment) && hasCanonicalEnd(segment, 0, segment.length);
}

/** Length possible for unpadded base64url, and no set bits after the last whole byte. */
function hasCanonicalEnd(s: string, start: number, end: number): boolean {
  const rest = (end - start) % 4;
  if (rest === 0) return true;
  if (rest === 1) return false;
  const c = s.charCodeAt(end - 1);
  const v = c < 128 ? (B64URL[c] ?? 255) : 255;
  if (v === 255) return false;
  return rest === 2 ? (v & 0x0f) === 0 : (v & 0x03) === 0;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Decode a base64url segment as a JSON object (strict UTF-8).
 *
 * @example
 * const header = decodeJsonObject(token, 0, parts.dot1, "header");
 */
export function decodeJsonObject(
  token: string,
  start: number,
  end: number,
  which: string,
): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(utf8.decode(Buffer.from(token.slice(start, end), "base64url")));
  } catch (e) {
    throw new OnbehalfError("ERR_TOKEN_MALFORMED", `the token ${which} is not valid UTF-8 JSON`, {
      cause: e,
    });
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new OnbehalfError("ERR_TOKEN_MALFORMED", `the token ${which} is not a JSON object`);
  }
  return value as Record<string, unknown>;
}

/**
 * Check the JOSE header against an issuer's policy and return its `alg` and `kid`.
 *
 * - `alg` must be listed, by exact case-sensitive match (`none`, `None`, `nOnE` are never listed);
 * - `jwk`, `jku`, `x5u`, `x5c` (keys from the token) and `b64` (RFC 7797) are refused;
 * - `crit` is refused whatever it lists: we understand no extension;
 * - `kid`, when present, must be a string;
 * - `typ` must match `require_typ` when one is set (case-insensitive, optional `application/`).
 *
 * @example
 * const { alg, kid } = checkHeader(header, policy);
 */
export function checkHeader(
  header: JoseHeader,
  policy: HeaderPolicy,
): { alg: string; kid: string | undefined } {
  const alg = header["alg"];
  if (typeof alg !== "string") {
    throw new OnbehalfError("ERR_TOKEN_ALG_NOT_ALLOWED", "the token header has no alg");
  }
  if (!policy.algorithms.has(alg)) {
    const why = policy.disabled.get(alg);
    throw new OnbehalfError(
      "ERR_TOKEN_ALG_NOT_ALLOWED",
      why ?? `alg "${alg}" is not allowed for this issuer (allowed: ${[...policy.algorithms].join(", ")})`,
    );
  }
  for (const name of REJECTED_PARAMETERS) {
    if (Object.hasOwn(header, name)) {
      throw new OnbehalfError(
        "ERR_TOKEN_HEADER_REJECTED",
        name === "b64"
          ? 'the token header has "b64" (RFC 7797 unencoded payload), which is not accepted'
          : `the token header has "${name}": keys are never taken from the token, only from the issuer's key set`,
      );
    }
  }
  if (Object.hasOwn(header, "crit")) {
    throw new OnbehalfError(
      "ERR_TOKEN_HEADER_REJECTED",
      'the token header has "crit": no critical extension is understood, so the token must be rejected',
    );
  }
  const kid = header["kid"];
  if (kid !== undefined && typeof kid !== "string") {
    throw new OnbehalfError("ERR_TOKEN_HEADER_REJECTED", "the token header kid is not a string");
  }
  const typ = header["typ"];
  if (typ !== undefined && typeof typ !== "string") {
    throw new OnbehalfError("ERR_TOKEN_TYPE_INVALID", "the token header typ is not a string");
  }
  if (policy.requireTyp !== null && (typ === undefined || normalizeTyp(typ) !== policy.requireTyp)) {
    throw new OnbehalfError(
      "ERR_TOKEN_TYPE_INVALID",
      `the token typ is ${typ === undefined ? "missing" : `"${typ}"`}, but this issuer requires "${policy.requireTyp}"` +
        " (an ID token is not an access token)",
    );
  }
  return { alg, kid };
}

/**
 * Normalize a media type for `typ` comparison (RFC 7515 §4.1.9): lower case, without `application/`.
 *
 * @example
 * normalizeTyp("application/AT+JWT"); // "at+jwt"
 */
export function normalizeTyp(typ: string): string {
  const lower = typ.toLowerCase();
  return lower.startsWith("application/") ? lower.slice("application/".length) : lower;
}
