/**
 * Proof checking in the browser, with WebCrypto only: the checkpoint's Ed25519 signature against the published
 * verifier key (C2SP signed note), the record's leaf hash recomputed from its canonical JSON (RFC 8785), and the
 * RFC 9162 §2.1.3.2 inclusion proof folded into the checkpoint's root. Nothing the server says about the
 * record's hash or the proof's validity is taken: only the bytes are.
 */
import { canonicalJson } from "../../src/audit/canonical.js";

/** What `/ui/api/audit/records/:log/:seq` answers for a record covered by a checkpoint. */
export interface InclusionProofJson {
  readonly log: string;
  readonly seq: number;
  readonly record: Record<string, unknown>;
  readonly leaf_index: number;
  readonly tree_size: number;
  readonly proof: readonly string[];
  readonly checkpoint: string;
}

export type ProofResult =
  | { readonly ok: true; readonly size: number; readonly root: string; readonly signer: string }
  | { readonly ok: false; readonly why: string };

const encoder = new TextEncoder();

/**
 * Check a proof against a verifier key (`<name>+<key id hex>+<base64(0x01 ‖ Ed25519 key)>`).
 *
 * @example
 * const r = await verifyProof(answer.proof, verifierKey); // { ok: true, … } or { ok: false, why }
 */
export async function verifyProof(p: InclusionProofJson, verifierKey: string): Promise<ProofResult> {
  try {
    const key = await parseVerifierKey(verifierKey);
    const head = await openCheckpoint(p.checkpoint, key);
    if (head.origin !== p.log) return bad(`the checkpoint is of log ${head.origin}, not ${p.log}`);
    const { leaf_hash: _claimed, ...fields } = p.record;
    if (fields["log"] !== p.log || fields["seq"] !== p.seq)
      return bad("the record is not the one the proof is for");
    const leaf = await sha256(concat(new Uint8Array([0]), encoder.encode(canonicalJson(fields))));
    const root = await rootFromInclusion(BigInt(p.seq - 1), BigInt(head.size), leaf, p.proof.map(fromBase64));
    if (!equal(root, head.root))
      return bad("the record and its proof lead to another root than the signed checkpoint's");
    return { ok: true, size: head.size, root: toBase64(head.root), signer: key.name };
  } catch (e) {
    return bad((e as Error).message);
  }
}

interface Verifier {
  readonly name: string;
  readonly keyId: Uint8Array;
  readonly key: Awaited<ReturnType<typeof crypto.subtle.importKey>>;
}

/** Parse a verifier key string and check that its key id matches its name and key. */
export async function parseVerifierKey(text: string): Promise<Verifier> {
  const m = /^([^+\s]+)\+([0-9a-f]{8})\+([A-Za-z0-9+/=]+)$/.exec(text.trim());
  if (m === null) throw new Error("a verifier key looks like <name>+<8 hex digits>+<base64 key>");
  const encoded = fromBase64(m[3]!);
  if (encoded.length !== 33 || encoded[0] !== 1)
    throw new Error("only Ed25519 verifier keys (type 0x01) are supported");
  const raw = encoded.slice(1);
  const keyId = (await sha256(concat(encoder.encode(`${m[1]!}\n`), encoded))).slice(0, 4);
  if (toHex(keyId) !== m[2]) throw new Error("the verifier key's id does not match its name and key");
  const key = await crypto.subtle.importKey("raw", raw, { name: "Ed25519" }, false, ["verify"]);
  return { name: m[1]!, keyId, key };
}

/** Verify a signed note's signature by `v` and return its tree head. */
async function openCheckpoint(
  note: string,
  v: Verifier,
): Promise<{ origin: string; size: number; root: Uint8Array }> {
  const split = note.lastIndexOf("\n\n");
  if (split === -1 || !note.endsWith("\n")) throw new Error("the checkpoint is not a signed note");
  const body = note.slice(0, split + 1);
  let signed = false;
  for (const line of note.slice(split + 2, -1).split("\n")) {
    const m = /^\u2014 (\S+) ([A-Za-z0-9+/=]+)$/u.exec(line);
    if (m === null) throw new Error("the checkpoint has a malformed signature line");
    const blob = fromBase64(m[2]!);
    if (m[1] !== v.name || blob.length < 4 || !equal(blob.slice(0, 4), v.keyId)) continue;
    if (!(await crypto.subtle.verify("Ed25519", v.key, blob.slice(4), encoder.encode(body)))) {
      throw new Error(`the checkpoint's signature by ${v.name} does not verify: it was altered or forged`);
    }
    signed = true;
  }
  if (!signed) throw new Error(`the checkpoint carries no signature by ${v.name}`);
  const [origin, size, root] = body.split("\n");
  if (origin === undefined || size === undefined || !/^(0|[1-9]\d*)$/.test(size) || root === undefined) {
    throw new Error("the checkpoint has no origin, size and root");
  }
  const hash = fromBase64(root);
  if (hash.length !== 32) throw new Error("the checkpoint's root is not 32 bytes");
  return { origin, size: Number(size), root: hash };
}

/** The root an inclusion proof implies (RFC 9162 §2.1.3.2). Throws on a proof of the wrong shape. */
export async function rootFromInclusion(
  index: bigint,
  size: bigint,
  leaf: Uint8Array,
  proof: readonly Uint8Array[],
): Promise<Uint8Array> {
  if (index < 0n || index >= size) throw new Error(`leaf ${index} is not in a tree of size ${size}`);
  if (proof.some((p) => p.length !== 32)) throw new Error("a proof hash is not 32 bytes");
  const inner = bitLength(index ^ (size - 1n));
  const border = popcount(index >> BigInt(inner));
  if (proof.length !== inner + border)
    throw new Error(`the proof has ${proof.length} hashes; it needs ${inner + border}`);
  let h = leaf;
  for (let i = 0; i < inner; i++) {
    h = ((index >> BigInt(i)) & 1n) === 0n ? await node(h, proof[i]!) : await node(proof[i]!, h);
  }
  for (let i = inner; i < proof.length; i++) h = await node(proof[i]!, h);
  return h;
}

function node(left: Uint8Array, right: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
  return sha256(concat(new Uint8Array([1]), left, right));
}

async function sha256(data: Uint8Array<ArrayBuffer>): Promise<Uint8Array<ArrayBuffer>> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", data));
}

function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function bitLength(x: bigint): number {
  return x === 0n ? 0 : x.toString(2).length;
}

function popcount(x: bigint): number {
  return [...x.toString(2)].filter((c) => c === "1").length;
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function fromBase64(s: string): Uint8Array<ArrayBuffer> {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function toBase64(b: Uint8Array): string {
  return btoa(String.fromCharCode(...b));
}

function toHex(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

function bad(why: string): ProofResult {
  return { ok: false, why };
}
