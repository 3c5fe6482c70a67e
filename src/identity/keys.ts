/**
 * onbehalf's own signing keys, for the tokens it issues: the development issuer now; delegation and
 * on-behalf-of tokens later. Ed25519 (EdDSA) by default, or P-256 (ES256). Keys live in a private JWK file
 * (mode 0600) created on first use; the `kid` is the key's RFC 7638 thumbprint.
 */
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type JsonWebKey,
  type KeyObject,
} from "node:crypto";
import { linkSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { createSigner } from "fast-jwt";
import { OnbehalfError } from "../errors.js";
import { jwkThumbprint } from "./jwk.js";

/** The algorithms onbehalf signs with. */
export type SigningAlgorithm = "EdDSA" | "ES256";

/** The public half of a signing key, as published in a JWKS. */
export interface PublicJwk {
  readonly kty: "OKP" | "EC";
  readonly crv: "Ed25519" | "P-256";
  readonly x: string;
  readonly y?: string;
  readonly kid: string;
  readonly alg: SigningAlgorithm;
  readonly use: "sig";
}

/** A private signing key with its public JWK. */
export interface SigningKey {
  readonly kid: string;
  readonly alg: SigningAlgorithm;
  readonly privateKey: KeyObject;
  readonly publicJwk: PublicJwk;
}

/**
 * Generate a fresh signing key in memory.
 *
 * @example
 * const key = generateSigningKey("ES256");
 */
export function generateSigningKey(alg: SigningAlgorithm = "EdDSA"): SigningKey {
  const { privateKey } =
    alg === "EdDSA" ? generateKeyPairSync("ed25519") : generateKeyPairSync("ec", { namedCurve: "P-256" });
  return fromPrivateKey(privateKey, alg);
}

/**
 * Load the signing key stored at `path`, or create one there (with its parent directories) when the file
 * does not exist. The file is a private JWK written with mode 0600; creation is atomic, so two processes
 * starting together end up with the same key. An existing file decides the algorithm; `alg` only applies to
 * a new key.
 *
 * @example
 * const key = loadOrCreateSigningKey("./keys/onbehalf.jwk");
 * key.publicJwk; // { kty: "OKP", crv: "Ed25519", x: "…", kid: "…", alg: "EdDSA", use: "sig" }
 */
export function loadOrCreateSigningKey(path: string, alg: SigningAlgorithm = "EdDSA"): SigningKey {
  const existing = readKeyFile(path);
  if (existing !== undefined) return existing;
  const key = generateSigningKey(alg);
  const jwk = { ...key.privateKey.export({ format: "jwk" }), kid: key.kid, alg: key.alg, use: "sig" };
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    const temporary = `${path}.${process.pid}.${Date.now()}.tmp`;
    writeFileSync(temporary, `${JSON.stringify(jwk, null, 2)}\n`, { mode: 0o600, flag: "wx" });
    try {
      linkSync(temporary, path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    } finally {
      unlinkSync(temporary);
    }
  } catch (e) {
    throw new OnbehalfError(
      "ERR_CONFIG_INVALID",
      `cannot write the signing key file ${path}: ${(e as Error).message}`,
      {
        cause: e,
      },
    );
  }
  const stored = readKeyFile(path);
  if (stored === undefined)
    throw new OnbehalfError("ERR_CONFIG_INVALID", `the signing key file ${path} vanished`);
  return stored;
}

/**
 * Read an existing signing key, never creating one: for commands that only check what others signed (`audit
 * verify`, `audit key`), where a new key would silently replace the one the records were signed with.
 *
 * @example
 * const key = loadSigningKey("./keys/audit.jwk"); // throws ERR_CONFIG_INVALID when the file is missing
 */
export function loadSigningKey(path: string, what = "signing key"): SigningKey {
  const key = readKeyFile(path);
  if (key === undefined) {
    throw new OnbehalfError(
      "ERR_CONFIG_INVALID",
      `no ${what} at ${path}: point the config at the key the records were signed with, or pass --key <verifier key>`,
    );
  }
  return key;
}

function readKeyFile(path: string): SigningKey | undefined {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new OnbehalfError(
      "ERR_CONFIG_INVALID",
      `cannot read the signing key file ${path}: ${(e as Error).message}`,
      {
        cause: e,
      },
    );
  }
  try {
    const jwk = JSON.parse(text) as Record<string, unknown>;
    const alg: SigningAlgorithm = jwk["kty"] === "OKP" && jwk["crv"] === "Ed25519" ? "EdDSA" : "ES256";
    if (alg === "ES256" && !(jwk["kty"] === "EC" && jwk["crv"] === "P-256")) {
      throw new Error("the key is neither Ed25519 nor P-256");
    }
    if (typeof jwk["d"] !== "string") throw new Error("the JWK has no private part (d)");
    return fromPrivateKey(createPrivateKey({ key: jwk as JsonWebKey, format: "jwk" }), alg);
  } catch (e) {
    throw new OnbehalfError(
      "ERR_CONFIG_INVALID",
      `the signing key file ${path} is not a usable private JWK (${(e as Error).message}); ` +
        "restore it, or delete it to create a new key (tokens signed with the old key stop verifying)",
      { cause: e },
    );
  }
}

function fromPrivateKey(privateKey: KeyObject, alg: SigningAlgorithm): SigningKey {
  const pub = createPublicKey(privateKey).export({ format: "jwk" });
  const members = {
    kty: String(pub.kty),
    crv: String(pub.crv),
    x: String(pub.x),
    ...(pub.y ? { y: pub.y } : {}),
  };
  const kid = jwkThumbprint(members);
  const publicJwk: PublicJwk =
    alg === "EdDSA"
      ? { kty: "OKP", crv: "Ed25519", x: members.x, kid, alg, use: "sig" }
      : { kty: "EC", crv: "P-256", x: members.x, y: String(pub.y), kid, alg, use: "sig" };
  return Object.freeze({ kid, alg, privateKey, publicJwk: Object.freeze(publicJwk) });
}

type Signer = (payload: Record<string, unknown>) => string;
const signers = new WeakMap<SigningKey, Map<string, Signer>>();

/**
 * Sign a JWT with one of our keys (fast-jwt's synchronous signer, built once per key and `typ`). `iat` is
 * added when the payload has none; everything else is signed as given.
 *
 * @example
 * const jwt = signJwt(key, { iss, sub: "alice", aud, exp: Math.floor(Date.now() / 1000) + 300 }, { typ: "at+jwt" });
 */
export function signJwt(
  key: SigningKey,
  payload: Record<string, unknown>,
  options: { typ?: string } = {},
): string {
  const typ = options.typ ?? "JWT";
  let byTyp = signers.get(key);
  if (byTyp === undefined) {
    byTyp = new Map();
    signers.set(key, byTyp);
  }
  let signer = byTyp.get(typ);
  if (signer === undefined) {
    const pem = key.privateKey.export({ type: "pkcs8", format: "pem" }).toString();
    signer = createSigner({
      key: pem,
      algorithm: key.alg,
      kid: key.kid,
      header: { alg: key.alg, typ },
    }) as Signer;
    byTyp.set(typ, signer);
  }
  return signer(payload);
}
