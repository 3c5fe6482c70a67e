/**
 * The browser's proof checker (console/src/verify.ts, WebCrypto only) against the server's own proofs and
 * checkpoints: it accepts every genuine proof and refuses every altered record, proof, checkpoint or key.
 */
import { createPublicKey, generateKeyPairSync } from "node:crypto";
import { describe, expect, it } from "vitest";
import { type InclusionProofJson, verifyProof } from "../../console/src/verify.js";
import { signCheckpoint, verifierKeyString } from "../../src/audit/checkpoint.js";
import { hasherOver, inclusionProof, rootOf } from "../../src/audit/merkle.js";
import { GENESIS_HASH, recordOf, seal } from "../../src/audit/record.js";

const { privateKey } = generateKeyPairSync("ed25519");
const LOG = "onbehalf@console-test";
const KEY = verifierKeyString(LOG, createPublicKey(privateKey));

function logOf(size: number) {
  const sealed = [];
  let prev = GENESIS_HASH;
  for (let seq = 1; seq <= size; seq++) {
    const s = seal(
      {
        kind: "attempt",
        time: new Date(Date.UTC(2026, 10, 29, 10, 0, seq)).toISOString(),
        tenant: "acme",
        user: `user-${seq % 3}`,
        email: null,
        agent: "bot",
        tier: "interactive",
        chain: ["bot"],
        tool: "get_customer",
        args_digest: null,
        args: { id: `c-${seq}`, note: "é ☃ \u2028" },
        decision: "allow",
        reason_code: "ok",
        reason: "allowed by defaults.*",
        rule: null,
        outcome: "pending",
        trace_id: `t-${seq}`,
        call_id: `call-${seq}`,
        latency_us: 100 + seq,
        source: "api",
        shadow: null,
      },
      LOG,
      seq,
      prev,
    );
    prev = s.leafHash;
    sealed.push(s);
  }
  return sealed;
}

function proofOf(size: number, seq: number, records = logOf(size)): InclusionProofJson {
  const leaves = records.map((r) => Buffer.from(r.leafHash, "hex"));
  const note = signCheckpoint({ origin: LOG, size, root: rootOf(leaves) }, LOG, privateKey);
  return {
    log: LOG,
    seq,
    record: recordOf(records[seq - 1]!) as unknown as Record<string, unknown>,
    leaf_index: seq - 1,
    tree_size: size,
    proof: inclusionProof(hasherOver(leaves), seq - 1, size).map((h) => h.toString("base64")),
    checkpoint: note,
  };
}

describe("the browser's proof checker", () => {
  it("verifies every record of trees of many sizes", async () => {
    for (const size of [1, 2, 3, 5, 8, 13, 31]) {
      const records = logOf(size);
      for (let seq = 1; seq <= size; seq++) {
        expect([size, seq, await verifyProof(proofOf(size, seq, records), KEY)]).toMatchObject([
          size,
          seq,
          { ok: true, size },
        ]);
      }
    }
  });

  it("does not verify a record with one byte changed, whatever leaf hash it claims", async () => {
    const p = proofOf(13, 6);
    const edited = { ...p, record: { ...p.record, user: "user-X" } };
    expect(await verifyProof(edited, KEY)).toMatchObject({
      ok: false,
      why: expect.stringMatching(/another root/),
    });
    const args = { ...p, record: { ...p.record, args: { id: "c-7", note: "é ☃ \u2028" } } };
    expect((await verifyProof(args, KEY)).ok).toBe(false);
  });

  it("does not verify a proof with a hash changed, missing or added", async () => {
    const p = proofOf(13, 6);
    const flipped = [...p.proof];
    flipped[1] = Buffer.from(
      Buffer.from(flipped[1]!, "base64").map((b, i) => (i === 0 ? b ^ 1 : b)),
    ).toString("base64");
    expect((await verifyProof({ ...p, proof: flipped }, KEY)).ok).toBe(false);
    expect((await verifyProof({ ...p, proof: p.proof.slice(1) }, KEY)).ok).toBe(false);
    expect((await verifyProof({ ...p, proof: [...p.proof, p.proof[0]!] }, KEY)).ok).toBe(false);
    expect((await verifyProof({ ...p, seq: 7 }, KEY)).ok).toBe(false);
  });

  it("does not verify against an altered checkpoint, another key, or a key whose id does not match", async () => {
    const p = proofOf(8, 3);
    const lines = p.checkpoint.split("\n");
    lines[1] = "9";
    expect(await verifyProof({ ...p, checkpoint: lines.join("\n") }, KEY)).toMatchObject({
      ok: false,
      why: expect.stringMatching(/does not verify/),
    });
    const other = verifierKeyString(LOG, createPublicKey(generateKeyPairSync("ed25519").privateKey));
    expect(await verifyProof(p, other)).toMatchObject({
      ok: false,
      why: expect.stringMatching(/no signature by/),
    });
    expect(await verifyProof(p, KEY.replace(/\+[0-9a-f]{8}\+/, "+00000000+"))).toMatchObject({
      ok: false,
      why: expect.stringMatching(/key's id/),
    });
  });
});
