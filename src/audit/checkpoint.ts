/**
 * Signed checkpoints in the C2SP tlog-checkpoint format, as C2SP signed notes with an Ed25519 signature:
 *
 *     <origin>\n<tree size>\n<base64 root hash>\n\n— <key name> <base64(key id ‖ signature)>\n
 *
 * The key id is the first four bytes of SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key). An auditor verifies a
 * checkpoint with nothing but the verifier key string `<name>+<key id hex>+<base64(0x01 ‖ public key)>`.
 */
import { createHash, createPublicKey, type KeyObject, sign, verify } from "node:crypto";
import { OnbehalfError } from "../errors.js";

const ED25519 = 0x01;
const DASH = "\u2014";

/** A checkpoint's content. */
export interface TreeHead {
  readonly origin: string;
  readonly size: number;
  /** The RFC 6962 root hash. */
  readonly root: Buffer;
}

/** A public key that verifies checkpoints, with the name it signs as. */
export interface CheckpointVerifier {
  readonly name: string;
  readonly keyId: Buffer;
  readonly publicKey: KeyObject;
}

/**
 * The note text of a checkpoint (its signed part, final newline included).
 *
 * @example
 * checkpointBody({ origin: "onbehalf@host-1", size: 3, root }); // "onbehalf@host-1\n3\n…=\n"
 */
export function checkpointBody(head: TreeHead): string {
  if (head.origin === "" || /[\s+]/u.test(head.origin)) {
    throw new OnbehalfError(
      "ERR_INVALID_ARGUMENT",
      `"${head.origin}" cannot be a checkpoint origin: no spaces or +`,
    );
  }
  return `${head.origin}\n${head.size}\n${head.root.toString("base64")}\n`;
}

/**
 * Sign a checkpoint with an Ed25519 key under `name` (by convention, the origin).
 *
 * @example
 * const note = signCheckpoint(head, "onbehalf@host-1", privateKey);
 */
export function signCheckpoint(head: TreeHead, name: string, privateKey: KeyObject): string {
  const body = checkpointBody(head);
  const publicKey = createPublicKey(privateKey);
  const signature = sign(null, Buffer.from(body), privateKey);
  const blob = Buffer.concat([keyIdOf(name, rawPublicKey(publicKey)), signature]).toString("base64");
  return `${body}\n${DASH} ${name} ${blob}\n`;
}

/**
 * A key whose signatures count: a verifier key (bound to the name it signs as), or an Ed25519 public key,
 * which counts under whatever name it signed (one key may sign several logs: `onbehalf@host`, `onbehalf@host/2`).
 */
export type TrustedKey = CheckpointVerifier | KeyObject;

/**
 * Verify a signed checkpoint against one or more trusted keys and return its tree head. At least one signature
 * by a trusted key must verify. Throws `ERR_INVALID_ARGUMENT` with what is wrong: malformed note, no signature
 * by a trusted key, a signature by a trusted key that does not verify.
 *
 * @example
 * const head = verifyCheckpoint(note, parseVerifierKey("onbehalf@host-1+1a2b3c4d+AbC…"));
 */
export function verifyCheckpoint(note: string, trusted: TrustedKey | readonly TrustedKey[]): TreeHead {
  const keys: readonly TrustedKey[] = Array.isArray(trusted) ? trusted : [trusted as TrustedKey];
  const split = note.lastIndexOf("\n\n");
  if (split === -1 || !note.endsWith("\n"))
    throw bad("it is not a signed note (no blank line before signatures)");
  const body = note.slice(0, split + 1);
  let signed = false;
  for (const line of note.slice(split + 2, -1).split("\n")) {
    const m = /^\u2014 (\S+) ([A-Za-z0-9+/=]+)$/u.exec(line);
    if (m === null) throw bad(`malformed signature line "${line.slice(0, 80)}"`);
    const name = m[1]!;
    const blob = Buffer.from(m[2]!, "base64");
    // Signatures by other keys (witnesses, rotated keys) are ignored, as the signed-note spec requires.
    const verifier = blob.length < 4 ? undefined : matchingKey(keys, name, blob.subarray(0, 4));
    if (verifier === undefined) continue;
    if (!verify(null, Buffer.from(body), verifier.publicKey, blob.subarray(4))) {
      throw bad(`the signature by ${name} does not verify: the checkpoint was altered or forged`);
    }
    signed = true;
  }
  if (!signed) throw bad(`the checkpoint carries no signature by ${describeKeys(keys)}`);
  return parseBody(body);
}

function matchingKey(
  keys: readonly TrustedKey[],
  name: string,
  keyId: Buffer,
): CheckpointVerifier | undefined {
  for (const k of keys) {
    const v = isVerifier(k) ? k : verifierOf(name, k);
    if (v.name === name && v.keyId.equals(keyId)) return v;
  }
  return undefined;
}

function isVerifier(k: TrustedKey): k is CheckpointVerifier {
  return (k as Partial<CheckpointVerifier>).keyId !== undefined;
}

function describeKeys(keys: readonly TrustedKey[]): string {
  const names = keys.map((k) => (isVerifier(k) ? k.name : "the audit key"));
  return names.length === 0 ? "any trusted key (none was given)" : [...new Set(names)].join(" or ");
}

/** Parse the tree head of a note without verifying it (to find which key to verify with, say). */
export function parseCheckpoint(note: string): TreeHead {
  const split = note.lastIndexOf("\n\n");
  return parseBody(split === -1 ? note : note.slice(0, split + 1));
}

/**
 * The verifier key string of an Ed25519 public key: `<name>+<key id hex>+<base64(0x01 ‖ key)>`.
 *
 * @example
 * verifierKeyString("onbehalf@host-1", publicKey); // "onbehalf@host-1+1a2b3c4d+AbC…"
 */
export function verifierKeyString(name: string, publicKey: KeyObject): string {
  const raw = rawPublicKey(publicKey);
  return `${name}+${keyIdOf(name, raw).toString("hex")}+${Buffer.concat([Buffer.from([ED25519]), raw]).toString("base64")}`;
}

/** Parse a verifier key string; checks that its key id matches its name and key. */
export function parseVerifierKey(text: string): CheckpointVerifier {
  const m = /^([^+\s]+)\+([0-9a-f]{8})\+([A-Za-z0-9+/=]+)$/.exec(text.trim());
  if (m === null) throw bad("a verifier key looks like <name>+<8 hex digits>+<base64 key>");
  const encoded = Buffer.from(m[3]!, "base64");
  if (encoded.length !== 33 || encoded[0] !== ED25519)
    throw bad("only Ed25519 verifier keys (type 0x01) are supported");
  const raw = encoded.subarray(1);
  const keyId = keyIdOf(m[1]!, raw);
  if (keyId.toString("hex") !== m[2]) throw bad("the verifier key's id does not match its name and key");
  const publicKey = createPublicKey({
    key: { kty: "OKP", crv: "Ed25519", x: raw.toString("base64url") },
    format: "jwk",
  });
  return { name: m[1]!, keyId, publicKey };
}

/** A verifier for a public key object signing as `name`. */
export function verifierOf(name: string, publicKey: KeyObject): CheckpointVerifier {
  return { name, keyId: keyIdOf(name, rawPublicKey(publicKey)), publicKey };
}

function parseBody(body: string): TreeHead {
  const lines = body.split("\n");
  const [origin, size, root] = lines;
  if (lines.length < 4 || origin === undefined || origin === "" || size === undefined || root === undefined) {
    throw bad("a checkpoint has an origin, a size and a root hash line");
  }
  if (!/^(0|[1-9]\d*)$/.test(size) || !Number.isSafeInteger(Number(size)))
    throw bad(`"${size}" is not a tree size`);
  const hash = Buffer.from(root, "base64");
  if (hash.length !== 32 || hash.toString("base64") !== root)
    throw bad("the root hash is not 32 bytes of base64");
  return { origin, size: Number(size), root: hash };
}

function keyIdOf(name: string, rawKey: Buffer): Buffer {
  return createHash("sha256")
    .update(`${name}\n`)
    .update(Buffer.from([ED25519]))
    .update(rawKey)
    .digest()
    .subarray(0, 4);
}

function rawPublicKey(publicKey: KeyObject): Buffer {
  const jwk = publicKey.export({ format: "jwk" });
  if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || jwk.x === undefined) {
    throw new OnbehalfError("ERR_INVALID_ARGUMENT", "checkpoints are signed with Ed25519 keys");
  }
  return Buffer.from(jwk.x, "base64url");
}

function bad(message: string): OnbehalfError {
  return new OnbehalfError("ERR_INVALID_ARGUMENT", `checkpoint: ${message}`);
}
