import { createHash } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  CompactRange,
  consistencyProof,
  EMPTY_ROOT,
  hashChildren,
  hasherOver,
  hashLeaf,
  inclusionProof,
  rootOf,
  verifyConsistency,
  verifyInclusion,
  verifySubtreeConsistency,
  verifySubtreeInclusion,
} from "../../src/audit/merkle.js";
import { jsonFiles } from "../support/testdata.js";

/** Parse a vector, keeping 64-bit integers exact (they exceed 2^53 in the error cases). */
function parseVector(text: string): Record<string, unknown> {
  return JSON.parse(text.replace(/:\s*(\d{16,})/g, ': "$1"'), (_k, v) =>
    typeof v === "string" && /^\d{16,}$/.test(v) ? BigInt(v) : v,
  );
}
const b64 = (s: unknown) => Buffer.from(String(s ?? ""), "base64");
const proofOf = (p: unknown) => ((p as string[] | null) ?? []).map(b64);
const int = (v: unknown) => (typeof v === "bigint" ? v : BigInt(v as number));

function outcome(run: () => void): "ok" | "error" {
  try {
    run();
    return "ok";
  } catch {
    return "error";
  }
}

const suites: Record<string, (v: Record<string, unknown>) => void> = {
  inclusion: (v) =>
    verifyInclusion(
      int(v["leafIdx"]),
      int(v["treeSize"]),
      b64(v["leafHash"]),
      proofOf(v["proof"]),
      b64(v["root"]),
    ),
  consistency: (v) =>
    verifyConsistency(
      int(v["size1"]),
      int(v["size2"]),
      proofOf(v["proof"]),
      b64(v["root1"]),
      b64(v["root2"]),
    ),
  subtreeinclusion: (v) =>
    verifySubtreeInclusion(
      int(v["leafIdx"]),
      int(v["start"]),
      int(v["end"]),
      b64(v["leafHash"]),
      proofOf(v["proof"]),
      b64(v["root"]),
    ),
  subtreeconsistency: (v) =>
    verifySubtreeConsistency(
      int(v["start"]),
      int(v["end"]),
      int(v["size"]),
      proofOf(v["proof"]),
      b64(v["root1"]),
      b64(v["root2"]),
    ),
};

describe("RFC 6962 vectors (transparency-dev/merkle testdata)", () => {
  for (const [folder, verify] of Object.entries(suites)) {
    it(`${folder}: every vector verifies or fails exactly as it says`, () => {
      const files = jsonFiles(`merkle/${folder}`);
      expect(files.length).toBeGreaterThan(50);
      const wrong: string[] = [];
      let errors = 0;
      for (const { name, text } of files) {
        const v = parseVector(text);
        const want = v["wantErr"] === true ? "error" : "ok";
        if (want === "error") errors++;
        if (outcome(() => verify(v)) !== want) wrong.push(`${name} (${String(v["desc"])}): expected ${want}`);
      }
      expect(wrong).toEqual([]);
      expect(errors).toBeGreaterThan(10);
    });
  }
});

/** MTH by the RFC's recursive definition, to check the incremental implementation against. */
function mth(leaves: Buffer[]): Buffer {
  if (leaves.length === 0) return createHash("sha256").digest();
  if (leaves.length === 1) return leaves[0]!;
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  return hashChildren(mth(leaves.slice(0, k)), mth(leaves.slice(k)));
}

describe("node hashes", () => {
  const reference = (l: Uint8Array, r: Uint8Array) =>
    createHash("sha256")
      .update(Buffer.from([1]))
      .update(l)
      .update(r)
      .digest();

  it("are SHA-256(0x01 ‖ left ‖ right) for hashes and for odd-sized input alike", () => {
    const bytes = (n?: number) =>
      fc.uint8Array(n === undefined ? { maxLength: 80 } : { minLength: n, maxLength: n });
    fc.assert(
      fc.property(fc.oneof(fc.tuple(bytes(32), bytes(32)), fc.tuple(bytes(), bytes())), ([l, r]) => {
        expect(hashChildren(Buffer.from(l), Buffer.from(r))).toEqual(reference(l, r));
      }),
    );
  });

  it("are each a buffer of their own, unchanged by the next node hashed", () => {
    const [a, b, c] = [1, 2, 3].map((i) => hashLeaf(`leaf ${i}`)) as [Buffer, Buffer, Buffer];
    const first = hashChildren(a, b);
    const copy = Buffer.from(first);
    const second = hashChildren(b, c);
    expect(first).toEqual(copy);
    expect(second).toEqual(reference(b, c));
    expect(second.buffer === first.buffer && second.byteOffset === first.byteOffset).toBe(false);
  });
});

describe("building trees and proofs", () => {
  const leaves = Array.from({ length: 70 }, (_, i) => hashLeaf(`record ${i}`));

  it("computes the same root incrementally as the RFC's recursive definition, for every size", () => {
    expect(rootOf([])).toEqual(EMPTY_ROOT);
    const range = new CompactRange();
    for (let n = 1; n <= leaves.length; n++) {
      range.append(leaves[n - 1]!);
      expect(range.root().equals(mth(leaves.slice(0, n)))).toBe(true);
    }
    const resumed = new CompactRange(range.size, range.subtrees);
    expect(resumed.root()).toEqual(range.root());
  });

  it("generates inclusion and consistency proofs that verify, and that fail for the wrong leaf or root", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 70 }), fc.integer({ min: 1, max: 70 }), (a, b) => {
        const [m, n] = a <= b ? [a, b] : [b, a];
        const sub = hasherOver(leaves);
        const index = m - 1;
        const root = mth(leaves.slice(0, n));
        const path = inclusionProof(sub, index, n);
        verifyInclusion(index, n, leaves[index]!, path, root);
        expect(() => verifyInclusion(index, n, hashLeaf("forged"), path, root)).toThrow();
        const proof = consistencyProof(sub, m, n);
        verifyConsistency(m, n, proof, mth(leaves.slice(0, m)), root);
        if (m < n) expect(() => verifyConsistency(m, n, proof, hashLeaf("x"), root)).toThrow();
      }),
      { numRuns: 300 },
    );
  });
});
