/**
 * RFC 6962 / RFC 9162 Merkle trees over the audit log: hashing, incremental roots (a compact range of
 * perfect subtrees, O(log n) per leaf), proof generation, and proof verification. Verification takes sizes
 * as bigint (or number) so that hostile proofs with 64-bit indices are refused, not silently rounded.
 *
 * Hashes: leaf = SHA-256(0x00 ‖ data), node = SHA-256(0x01 ‖ left ‖ right), empty tree = SHA-256("").
 */
import { createHash, hash } from "node:crypto";
import { OnbehalfError } from "../errors.js";

export const HASH_SIZE = 32;
const LEAF = Buffer.from([0]);
const NODE = Buffer.from([1]);

/** The root of the empty tree: SHA-256 of nothing. */
export const EMPTY_ROOT: Buffer = hash("sha256", Buffer.alloc(0), "buffer");

/** RFC 6962 leaf hash of some bytes. */
export function hashLeaf(data: Buffer | string): Buffer {
  return createHash("sha256").update(LEAF).update(data).digest();
}

/** 0x01 ‖ left ‖ right of two 32-byte hashes, rewritten for each interior node (hashing is synchronous). */
const NODE_INPUT = Buffer.alloc(1 + 2 * HASH_SIZE, 1);

/**
 * RFC 6962 interior node hash. Two hashes are hashed in one call over a reused buffer: a `Hash` object and
 * three updates cost ~1.5× as much per node (docs/BENCHMARKS.md), and the writer and `audit verify` hash about
 * one node per record. Anything else (a hostile proof's odd-sized entry) takes the general path.
 */
export function hashChildren(left: Buffer, right: Buffer): Buffer {
  if (left.length !== HASH_SIZE || right.length !== HASH_SIZE) {
    return createHash("sha256").update(NODE).update(left).update(right).digest();
  }
  left.copy(NODE_INPUT, 1);
  right.copy(NODE_INPUT, 1 + HASH_SIZE);
  return hash("sha256", NODE_INPUT, "buffer");
}

/** A proof that does not verify: thrown by the `verify*` functions with what is wrong. */
export class ProofError extends OnbehalfError {
  constructor(message: string) {
    super("ERR_INVALID_ARGUMENT", message);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Building trees

/**
 * The right edge of a growing tree: the roots of its perfect subtrees, largest first. Appending a leaf merges
 * equal-sized subtrees (like adding 1 in binary); the root folds them from the right. This is how a writer
 * knows the tree head after every record without keeping the tree.
 *
 * @example
 * const range = new CompactRange(); range.append(hashLeaf("a")); range.root();
 */
export class CompactRange {
  private hashes: Buffer[];
  private count: number;

  constructor(size = 0, hashes: readonly Buffer[] = []) {
    if (popcount(size) !== hashes.length) {
      throw new OnbehalfError(
        "ERR_INVALID_ARGUMENT",
        `a compact range of size ${size} has ${popcount(size)} hashes`,
      );
    }
    this.count = size;
    this.hashes = [...hashes];
  }

  get size(): number {
    return this.count;
  }

  /** The perfect-subtree roots, largest (leftmost) first. */
  get subtrees(): readonly Buffer[] {
    return this.hashes;
  }

  append(leafHash: Buffer): void {
    let h = leafHash;
    // Each trailing 1-bit of the old size is a perfect subtree of the same height to merge with.
    for (let n = this.count; n % 2 === 1; n = Math.floor(n / 2)) h = hashChildren(this.hashes.pop()!, h);
    this.hashes.push(h);
    this.count++;
  }

  root(): Buffer {
    if (this.hashes.length === 0) return EMPTY_ROOT;
    let h = this.hashes[this.hashes.length - 1]!;
    for (let i = this.hashes.length - 2; i >= 0; i--) h = hashChildren(this.hashes[i]!, h);
    return h;
  }
}

/** MTH(D[n]) of leaf hashes. */
export function rootOf(leaves: readonly Buffer[]): Buffer {
  const range = new CompactRange();
  for (const leaf of leaves) range.append(leaf);
  return range.root();
}

/** Reads the hash of the perfect or right-edge subtree over leaves [start, end). */
export type SubtreeHasher = (start: number, end: number) => Buffer;

/** A SubtreeHasher over leaf hashes held in memory. */
export function hasherOver(leaves: readonly Buffer[]): SubtreeHasher {
  return (start, end) => rootOf(leaves.slice(start, end));
}

/**
 * RFC 9162 §2.1.3.1 inclusion proof for leaf `index` in the tree of the first `size` leaves.
 *
 * @example
 * inclusionProof(hasherOver(leaves), 3, leaves.length);
 */
export function inclusionProof(subtree: SubtreeHasher, index: number, size: number): Buffer[] {
  if (!(index >= 0 && index < size)) {
    throw new OnbehalfError("ERR_INVALID_ARGUMENT", `leaf ${index} is not in a tree of size ${size}`);
  }
  const path: Buffer[] = [];
  let start = 0;
  let end = size;
  let m = index;
  // Walk down from the root, collecting the sibling of each step, then reverse (proofs go bottom-up).
  while (end - start > 1) {
    const k = largestPowerOfTwoBelow(end - start);
    if (m < k) {
      path.push(subtree(start + k, end));
      end = start + k;
    } else {
      path.push(subtree(start, start + k));
      start += k;
      m -= k;
    }
  }
  return path.reverse();
}

/**
 * RFC 9162 §2.1.4.1 consistency proof between the trees of the first `size1` and `size2` leaves.
 *
 * @example
 * consistencyProof(hasherOver(leaves), 4, 7);
 */
export function consistencyProof(subtree: SubtreeHasher, size1: number, size2: number): Buffer[] {
  if (!(size1 > 0 && size1 <= size2)) {
    throw new OnbehalfError("ERR_INVALID_ARGUMENT", `no consistency proof from size ${size1} to ${size2}`);
  }
  const proof: Buffer[] = [];
  // SUBPROOF(m, D[start:end], b), unrolled; siblings are collected top-down and reversed at the end.
  let start = 0;
  let end = size2;
  let m = size1;
  let complete = true;
  while (m !== end - start) {
    const k = largestPowerOfTwoBelow(end - start);
    if (m <= k) {
      proof.push(subtree(start + k, end));
      end = start + k;
    } else {
      proof.push(subtree(start, start + k));
      start += k;
      m -= k;
      complete = false;
    }
  }
  if (!complete) proof.push(subtree(start, end));
  return proof.reverse();
}

// ---------------------------------------------------------------------------------------------------------
// Verifying proofs (RFC 9162 §2.1.3.2 and §2.1.4.2, and the subtree variants of
// draft-ietf-plants-merkle-tree-certs)

type Size = number | bigint;

/**
 * Verify that `leafHash` is leaf `index` of the tree of `size` leaves with root `root`. Throws ProofError.
 *
 * @example
 * verifyInclusion(3, 7, leafHash, proof, root);
 */
export function verifyInclusion(
  index: Size,
  size: Size,
  leafHash: Buffer,
  proof: readonly Buffer[],
  root: Buffer,
): void {
  const computed = rootFromInclusion(big(index), big(size), leafHash, proof);
  if (!computed.equals(root)) throw new ProofError("the inclusion proof leads to another root");
}

/** Verify inclusion of leaf `index` in the subtree [start, end) whose root is `root`. */
export function verifySubtreeInclusion(
  index: Size,
  start: Size,
  end: Size,
  leafHash: Buffer,
  proof: readonly Buffer[],
  root: Buffer,
): void {
  const [i, s, e] = [big(index), big(start), big(end)];
  checkSubtree(s, e);
  if (i < s || i >= e) throw new ProofError(`leaf ${i} is outside the subtree [${s}, ${e})`);
  const computed = rootFromInclusion(i - s, e - s, leafHash, proof);
  if (!computed.equals(root)) throw new ProofError("the inclusion proof leads to another subtree root");
}

/**
 * Verify that the tree of `size2` leaves with root `root2` extends the tree of `size1` leaves with `root1`.
 *
 * @example
 * verifyConsistency(4, 7, proof, root4, root7);
 */
export function verifyConsistency(
  size1: Size,
  size2: Size,
  proof: readonly Buffer[],
  root1: Buffer,
  root2: Buffer,
): void {
  const [m, n] = [big(size1), big(size2)];
  if (n < m) throw new ProofError(`the second size ${n} is smaller than the first ${m}`);
  if (m === 0n) throw new ProofError("a consistency proof from the empty tree proves nothing");
  verifySubtreeConsistency(0n, m, n, proof, root1, root2);
}

/** Verify that the subtree [start, end) with root `root1` is part of the tree of `size` leaves with `root2`. */
export function verifySubtreeConsistency(
  start: Size,
  end: Size,
  size: Size,
  proof: readonly Buffer[],
  root1: Buffer,
  root2: Buffer,
): void {
  const [s, e, n] = [big(start), big(end), big(size)];
  if (n < e) throw new ProofError(`the tree size ${n} is smaller than the subtree's end ${e}`);
  checkHashes(proof);
  if (s === e) {
    // The empty subtree is part of every tree; all there is to check is that it is what it claims to be.
    if (proof.length > 0) throw new ProofError("the subtree is empty, so the proof must be empty");
    if (!root1.equals(EMPTY_ROOT)) throw new ProofError("the empty subtree's root must be the empty hash");
    return;
  }
  checkSubtree(s, e);
  let computed: Buffer;
  if (s === 0n && e === n) {
    if (proof.length > 0) throw new ProofError("the subtree is the whole tree, so the proof must be empty");
    computed = root1;
  } else {
    if (proof.length === 0) throw new ProofError("the proof is empty");
    computed = rootFromSubtreeConsistency(s, e, n, proof, root1);
  }
  if (!computed.equals(root2)) throw new ProofError("the consistency proof leads to another root");
}

/** The root an inclusion proof implies: the leaf's path climbs left or right by the bits of its index. */
function rootFromInclusion(index: bigint, size: bigint, leafHash: Buffer, proof: readonly Buffer[]): Buffer {
  if (index >= size) throw new ProofError(`leaf ${index} is not in a tree of size ${size}`);
  if (leafHash.length !== HASH_SIZE) throw new ProofError("the leaf hash is not 32 bytes");
  checkHashes(proof);
  // Below the level where the paths to `index` and to the last leaf part, siblings sit left or right of the
  // path; above it, the path runs along the right edge and every sibling is on the left.
  const inner = bitLength(index ^ (size - 1n));
  const border = popcountBig(index >> BigInt(inner));
  if (proof.length !== inner + border) {
    throw new ProofError(`the proof has ${proof.length} hashes; this leaf and size need ${inner + border}`);
  }
  let h = leafHash;
  for (let i = 0; i < inner; i++) {
    h = ((index >> BigInt(i)) & 1n) === 0n ? hashChildren(h, proof[i]!) : hashChildren(proof[i]!, h);
  }
  for (let i = inner; i < proof.length; i++) h = hashChildren(proof[i]!, h);
  return h;
}

/** Root of the `size` tree implied by a proof that subtree [start, end) with root `subRoot` is part of it. */
function rootFromSubtreeConsistency(
  start: bigint,
  end: bigint,
  size: bigint,
  proof: readonly Buffer[],
  subRoot: Buffer,
): Buffer {
  const height = bitLength((end - 1n) ^ start); // height of the subtree's node
  if (end === size) {
    // The subtree is on the right edge: climbing to the root only meets left siblings.
    const want = popcountBig(start >> BigInt(height));
    if (proof.length !== want) throw new ProofError(`the proof has ${proof.length} hashes; it needs ${want}`);
    return proof.reduce((h, p) => hashChildren(p, h), subRoot);
  }
  const fork = bitLength((end - 1n) ^ (size - 1n)); // where the paths to end-1 and size-1 part
  const low = trailingZeros(end - start); // height of the rightmost perfect subtree inside [start, end)
  // The proof starts with that rightmost perfect subtree's root, unless it is the whole subtree (the
  // verifier already has that root).
  const perfect = end - start === 1n << BigInt(low);
  const seedAt = perfect ? 0 : 1;
  const want = seedAt + (fork - low) + popcountBig((end - 1n) >> BigInt(fork));
  if (proof.length !== want) throw new ProofError(`the proof has ${proof.length} hashes; it needs ${want}`);
  // Climb from the seed to the subtree's height twice at once: as the subtree was when it ended at `end`
  // (left siblings only) and as it has grown in the tree of `size` (right siblings below the fork too).
  let asWas = perfect ? subRoot : proof[0]!;
  let grown = asWas;
  let next = seedAt;
  for (let level = low; level < height; level++) {
    if (((end - 1n) >> BigInt(level)) & 1n) {
      asWas = hashChildren(proof[next]!, asWas);
      grown = hashChildren(proof[next]!, grown);
      next++;
    } else if (level < fork) {
      grown = hashChildren(grown, proof[next]!);
      next++;
    }
  }
  if (!asWas.equals(subRoot)) throw new ProofError("the proof does not lead to the given subtree root");
  // The rest is an inclusion proof of the grown subtree's node in the tree of `size`, one level up.
  const nodeIndex = start >> BigInt(height);
  const nodeCount = ((size - 1n) >> BigInt(height)) + 1n;
  return rootFromInclusion(nodeIndex, nodeCount, grown, proof.slice(next));
}

/** A subtree [start, end) is valid when it is non-empty and aligned: start is a multiple of its width. */
function checkSubtree(start: bigint, end: bigint): void {
  if (start < 0n || end <= start) throw new ProofError(`[${start}, ${end}) is not a subtree`);
  const width = 1n << BigInt(bitLength(end - start - 1n));
  if (start % width !== 0n) throw new ProofError(`[${start}, ${end}) is not aligned to a subtree boundary`);
}

function checkHashes(proof: readonly Buffer[]): void {
  for (const p of proof) if (p.length !== HASH_SIZE) throw new ProofError("a proof hash is not 32 bytes");
}

function big(n: Size): bigint {
  const b = typeof n === "bigint" ? n : Number.isSafeInteger(n) ? BigInt(n) : -1n;
  if (b < 0n || b >= 1n << 64n) throw new ProofError(`${n} is not a tree size or index`);
  return b;
}

function bitLength(x: bigint): number {
  return x === 0n ? 0 : x.toString(2).length;
}

function popcountBig(x: bigint): number {
  let n = 0;
  for (const c of x.toString(2)) if (c === "1") n++;
  return n;
}

function trailingZeros(x: bigint): number {
  let n = 0;
  while (x > 0n && (x & 1n) === 0n) {
    x >>= 1n;
    n++;
  }
  return n;
}

function popcount(n: number): number {
  let c = 0;
  for (let x = n; x > 0; x = Math.floor(x / 2)) c += x % 2;
  return c;
}

function largestPowerOfTwoBelow(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}
