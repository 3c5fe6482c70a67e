/**
 * Public JSON Web Keys: import one into a `KeyObject` we can verify with, refuse the ones we must not use, and
 * pick the key a token names.
 *
 * A JWK is accepted only when it is an asymmetric public signing key whose type fits the algorithms it would
 * be used with: RSA (RS256…PS512, at least 2048 bits, a sane exponent, not a ROCA key), EC P-256/P-384/P-521
 * (ES256/ES384/ES512, point on the curve), OKP Ed25519 (EdDSA). Symmetric (`oct`) keys are never taken from a
 * key set: an HMAC secret is configured as the issuer's `secret`, or not at all.
 */
import { createHash, createPublicKey, type KeyObject } from "node:crypto";
import type { Algorithm } from "../config/issuer.js";

/** A JSON Web Key as it arrives: an object with string members we have not checked yet. */
export type Jwk = Readonly<Record<string, unknown>>;

/** An imported public key, ready to verify signatures with. */
export interface VerificationKey {
  /** The JWK's `kid`, when it has one. */
  readonly kid: string | undefined;
  /** RFC 7638 thumbprint (SHA-256, base64url): the key's identity across refetches. */
  readonly thumbprint: string;
  readonly kty: "RSA" | "EC" | "OKP";
  /** Algorithms this key may verify: the ones its type allows, narrowed to the JWK's `alg` when it has one. */
  readonly algorithms: readonly Algorithm[];
  readonly keyObject: KeyObject;
  /** SPKI PEM of the key (what fast-jwt's synchronous verifier takes). */
  readonly pem: string;
}

/** Either the imported key or why it was skipped. */
export type ImportResult = { readonly key: VerificationKey } | { readonly skipped: string };

const RSA_ALGORITHMS: readonly Algorithm[] = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"];
const EC_ALGORITHMS: Readonly<Record<string, Algorithm>> = {
  "P-256": "ES256",
  "P-384": "ES384",
  "P-521": "ES512",
};
const PRIVATE_MEMBERS = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] as const;
/** RSA moduli below this are refused (RFC 8725 §3.5 points at NIST SP 800-131A: 2048 bits). */
export const MIN_RSA_BITS = 2048;

/**
 * Import a public JWK for signature verification, or say why it cannot be used.
 *
 * @example
 * const r = importJwk({ kty: "OKP", crv: "Ed25519", x: "…", kid: "k1" });
 * if ("key" in r) console.log(r.key.algorithms); // ["EdDSA"]
 */
export function importJwk(jwk: unknown): ImportResult {
  if (jwk === null || typeof jwk !== "object" || Array.isArray(jwk)) return { skipped: "not a JSON object" };
  const j = jwk as Jwk;
  const label = typeof j["kid"] === "string" ? `key "${j["kid"]}"` : "a key without kid";
  const skip = (why: string): ImportResult => ({ skipped: `${label}: ${why}` });

  if (j["kid"] !== undefined && typeof j["kid"] !== "string") return skip("kid is not a string");
  if (j["use"] !== undefined && j["use"] !== "sig") return skip(`use is "${String(j["use"])}", not "sig"`);
  if (j["key_ops"] !== undefined) {
    const ops = j["key_ops"];
    if (!Array.isArray(ops) || !ops.includes("verify")) return skip('key_ops does not include "verify"');
  }
  if (j["kty"] === "oct") return skip("symmetric keys are never taken from a key set (configure `secret`)");
  for (const m of PRIVATE_MEMBERS) {
    if (j[m] !== undefined) return skip(`it carries the private member "${m}"; publish public keys only`);
  }

  let kty: VerificationKey["kty"];
  let family: readonly Algorithm[];
  let members: Record<string, string>;
  switch (j["kty"]) {
    case "RSA":
      kty = "RSA";
      family = RSA_ALGORITHMS;
      members = { kty: "RSA", n: str(j["n"]), e: str(j["e"]) };
      break;
    case "EC": {
      const alg = typeof j["crv"] === "string" ? EC_ALGORITHMS[j["crv"]] : undefined;
      if (alg === undefined) return skip(`EC curve "${String(j["crv"])}" is not P-256, P-384 or P-521`);
      kty = "EC";
      family = [alg];
      members = { kty: "EC", crv: str(j["crv"]), x: str(j["x"]), y: str(j["y"]) };
      break;
    }
    case "OKP":
      if (j["crv"] !== "Ed25519") return skip(`OKP curve "${String(j["crv"])}" is not Ed25519`);
      kty = "OKP";
      family = ["EdDSA"];
      members = { kty: "OKP", crv: "Ed25519", x: str(j["x"]) };
      break;
    default:
      return skip(`kty "${String(j["kty"])}" is not RSA, EC or OKP`);
  }
  for (const [name, value] of Object.entries(members)) {
    if (value === "") return skip(`member "${name}" is missing or not a string`);
  }

  let algorithms = family;
  if (j["alg"] !== undefined) {
    const alg = j["alg"];
    if (typeof alg !== "string" || !(family as readonly string[]).includes(alg)) {
      return skip(
        `alg "${String(alg)}" does not fit a ${kty} key${kty === "RSA" ? "" : ` on ${members["crv"]}`}`,
      );
    }
    algorithms = [alg as Algorithm];
  }

  let keyObject: KeyObject;
  try {
    keyObject = createPublicKey({ key: members, format: "jwk" });
  } catch (e) {
    return skip(`cannot be imported (${(e as Error).message})`);
  }
  if (kty === "RSA") {
    const weak = weakRsaReason(keyObject, members["n"] ?? "");
    if (weak !== null) return skip(weak);
  }
  const pem = keyObject.export({ type: "spki", format: "pem" }).toString();
  return {
    key: {
      kid: j["kid"] as string | undefined,
      thumbprint: thumbprintOf(members),
      kty,
      algorithms,
      keyObject,
      pem,
    },
  };
}

/**
 * RFC 7638 JWK thumbprint: SHA-256 over the required members in lexicographic order, base64url.
 *
 * @example
 * jwkThumbprint({ kty: "OKP", crv: "Ed25519", x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" });
 * // "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
 */
export function jwkThumbprint(key: object): string {
  const jwk = key as Jwk;
  switch (jwk["kty"]) {
    case "RSA":
      return thumbprintOf({ kty: "RSA", n: str(jwk["n"]), e: str(jwk["e"]) });
    case "EC":
      return thumbprintOf({ kty: "EC", crv: str(jwk["crv"]), x: str(jwk["x"]), y: str(jwk["y"]) });
    case "OKP":
      return thumbprintOf({ kty: "OKP", crv: str(jwk["crv"]), x: str(jwk["x"]) });
    default:
      throw new TypeError(`no RFC 7638 thumbprint for kty "${String(jwk["kty"])}"`);
  }
}

function thumbprintOf(members: Record<string, string>): string {
  const sorted = Object.keys(members)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${JSON.stringify(members[k])}`);
  return createHash("sha256")
    .update(`{${sorted.join(",")}}`)
    .digest("base64url");
}

function str(v: unknown): string {
  return typeof v === "string" ? v : "";
}

function weakRsaReason(key: KeyObject, n: string): string | null {
  const details = key.asymmetricKeyDetails;
  const bits = details?.modulusLength ?? 0;
  if (bits < MIN_RSA_BITS) return `RSA modulus of ${bits} bits is below ${MIN_RSA_BITS}`;
  const e = details?.publicExponent ?? 0n;
  if (e < 3n || e % 2n === 0n) return `RSA public exponent ${e} is not an odd number ≥ 3`;
  if (isRocaModulus(BigInt(`0x${Buffer.from(n, "base64url").toString("hex") || "0"}`))) {
    return "RSA modulus has the ROCA fingerprint (CVE-2017-15361): the private key is recoverable";
  }
  return null;
}

/**
 * ROCA (CVE-2017-15361) fingerprint: Infineon's generator made moduli with `n mod p` inside the subgroup that
 * 65537 generates modulo every small prime `p`. A random modulus passes that test for all 38 primes below 168
 * with a probability far below 2^-100, so a match identifies an affected key.
 */
const ROCA_PRIMES = [
  3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107,
  109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
];
let rocaSubgroups: { readonly p: bigint; readonly members: ReadonlySet<number> }[] | undefined;

/**
 * True when the modulus carries the ROCA fingerprint.
 *
 * @example
 * isRocaModulus(BigInt(`0x${Buffer.from(jwk.n, "base64url").toString("hex")}`)); // false for a sound key
 */
export function isRocaModulus(n: bigint): boolean {
  rocaSubgroups ??= ROCA_PRIMES.map((p) => {
    const members = new Set<number>();
    let x = 1;
    const g = 65537 % p;
    do {
      members.add(x);
      x = (x * g) % p;
    } while (x !== 1);
    return { p: BigInt(p), members };
  });
  for (const { p, members } of rocaSubgroups) {
    if (!members.has(Number(n % p))) return false;
  }
  return true;
}

/** Keys indexed for lookup by `kid`. */
export interface KeyIndex<E extends { readonly key: VerificationKey }> {
  readonly all: readonly E[];
  readonly byKid: ReadonlyMap<string, readonly E[]>;
}

/**
 * Index keys by kid.
 *
 * @example
 * const index = indexKeys(keys.map((key) => ({ key })));
 */
export function indexKeys<E extends { readonly key: VerificationKey }>(entries: readonly E[]): KeyIndex<E> {
  const byKid = new Map<string, E[]>();
  for (const e of entries) {
    if (e.key.kid === undefined) continue;
    const list = byKid.get(e.key.kid);
    if (list) list.push(e);
    else byKid.set(e.key.kid, [e]);
  }
  return { all: entries, byKid };
}

/** The outcome of looking for the key a token names. */
export type KeySelection<E> =
  | { readonly entry: E }
  | { readonly problem: "unknown-kid" | "no-key" | "ambiguous" | "wrong-type"; readonly detail: string };

/**
 * Choose the key for a token: by `kid` when the header has one (the key's type must fit `alg`), else the one
 * key that fits `alg` (two or more that fit = ambiguous: fail closed rather than try each).
 *
 * @example
 * const s = selectKey(index, header.kid, header.alg);
 * if ("entry" in s) use(s.entry.key);
 */
export function selectKey<E extends { readonly key: VerificationKey }>(
  index: KeyIndex<E>,
  kid: string | undefined,
  alg: string,
): KeySelection<E> {
  if (kid !== undefined) {
    const named = index.byKid.get(kid);
    if (named === undefined) return { problem: "unknown-kid", detail: `no key with kid "${kid}"` };
    const fitting = named.filter((e) => (e.key.algorithms as readonly string[]).includes(alg));
    if (fitting.length === 1 && fitting[0] !== undefined) return { entry: fitting[0] };
    if (fitting.length > 1)
      return { problem: "ambiguous", detail: `several keys have kid "${kid}" and fit ${alg}` };
    const types = named.map((e) => `${e.key.kty} for ${e.key.algorithms.join("/")}`).join(", ");
    return { problem: "wrong-type", detail: `key "${kid}" (${types}) cannot verify ${alg}` };
  }
  const fitting = index.all.filter((e) => (e.key.algorithms as readonly string[]).includes(alg));
  if (fitting.length === 1 && fitting[0] !== undefined) return { entry: fitting[0] };
  if (fitting.length === 0)
    return { problem: "no-key", detail: `the token has no kid and no key fits ${alg}` };
  return { problem: "ambiguous", detail: `the token has no kid and ${fitting.length} keys fit ${alg}` };
}
