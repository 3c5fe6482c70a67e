/**
 * One suite for every audit store: the same appends, queries, checkpoints, proofs, verification and tamper
 * attacks, run against SQLite and against PostgreSQL.
 */
import { generateKeyPairSync } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  parseVerifierKey,
  signCheckpoint,
  verifierKeyString,
  verifierOf,
  verifyCheckpoint,
} from "../../src/audit/checkpoint.js";
import { type AuditLog, openAuditLog } from "../../src/audit/log.js";
import { verifyConsistency, verifyInclusion } from "../../src/audit/merkle.js";
import { proveConsistency, proveInclusion } from "../../src/audit/proof.js";
import { type AuditFields, leafHash } from "../../src/audit/record.js";
import type { AuditStore } from "../../src/audit/store.js";
import { verifyAudit } from "../../src/audit/verify.js";

/** What the suite needs from a store: a fresh empty one, and raw SQL (with `?` placeholders) to tamper with it. */
export interface StoreHarness {
  open(): Promise<AuditStore>;
  exec(store: AuditStore, sql: string, params: unknown[]): Promise<Record<string, unknown>[]>;
  drop?(): Promise<void>;
}

const { privateKey, publicKey } = generateKeyPairSync("ed25519");

export function fields(i: number, over: Partial<AuditFields> = {}): AuditFields {
  return {
    kind: "attempt",
    time: new Date(Date.UTC(2026, 10, 28, 12, 0, 0) + i).toISOString(),
    tenant: i % 4 === 0 ? "globex" : "acme",
    user: i % 2 === 0 ? "alice" : "bob",
    email: null,
    agent: i % 3 === 0 ? "planner" : "bot",
    tier: "interactive",
    chain: ["bot"],
    tool: i % 3 === 0 ? "refund" : "lookup",
    args_digest: "sha256:00",
    args: { i },
    decision: i % 5 === 0 ? "deny" : "allow",
    reason_code: i % 5 === 0 ? "permission_deny" : "ok",
    reason: "",
    rule: null,
    outcome: "none",
    trace_id: null,
    call_id: `call-${i}`,
    latency_us: 3,
    source: "inproc",
    shadow: null,
    ...over,
  };
}

async function writeLog(store: AuditStore, logId: string, n: number, every = 10): Promise<AuditLog> {
  const log = await openAuditLog(store, {
    logId,
    flushMs: 1,
    batchSize: 7,
    checkpoints: { key: privateKey, every, seconds: 0 },
  });
  for (let i = 1; i <= n; i++) log.append(fields(i));
  await log.flush();
  return log;
}

/** Verification with the audit key's public half, every record proven (no unsigned tail). */
const trusted = { keys: [publicKey] };

export function describeStore(name: string, harness: StoreHarness): void {
  describe(`audit store: ${name}`, () => {
    afterAll(async () => harness.drop?.());

    describe("appending and querying", () => {
      let store: AuditStore;
      beforeAll(async () => {
        store = await harness.open();
        const log = await writeLog(store, "w1", 40);
        await log.close();
      });
      afterAll(async () => store.close());

      it("keeps records in sequence with their head", async () => {
        expect(await store.head("w1")).toMatchObject({ seq: 40 });
        expect(await store.head("nobody")).toBeNull();
        const rows = await store.rows("w1", 38, 10);
        expect(rows.map((r) => r.seq)).toEqual([38, 39, 40]);
        expect(rows[0]!.leafHash).toBe(leafHash(rows[0]!.canonical));
        expect(await store.leafHashes("w1", 2, 4)).toEqual(
          (await store.rows("w1", 2, 3)).map((r) => r.leafHash),
        );
      });

      it("filters by user, tool, decision, tenant, agent and time, newest first, and pages by cursor", async () => {
        const alice = await store.query({ user: "alice", limit: 1000 });
        expect(alice.records).toHaveLength(20);
        expect(alice.records.every((r) => r.user === "alice")).toBe(true);
        expect(alice.records[0]!.seq).toBe(40);
        const denied = await store.query({ decision: "deny", tool: "refund", tenant: "acme" });
        expect(denied.records.map((r) => r.seq)).toEqual([30, 15]);
        expect(
          (await store.query({ agent: "planner", since: fields(30).time })).records.map((r) => r.seq),
        ).toEqual([39, 36, 33, 30]);
        expect((await store.query({ until: fields(3).time })).records.map((r) => r.seq)).toEqual([2, 1]);
        const seen: number[] = [];
        let cursor: string | undefined;
        do {
          const page = await store.query({ limit: 15, ...(cursor === undefined ? {} : { cursor }) });
          seen.push(...page.records.map((r) => r.seq));
          cursor = page.next_cursor ?? undefined;
        } while (cursor !== undefined);
        expect(seen).toEqual(Array.from({ length: 40 }, (_, i) => 40 - i));
      });

      it("signs checkpoints that verify with nothing but the verifier key string", async () => {
        const checkpoints = await store.checkpoints("w1");
        expect(checkpoints.map((c) => c.size)).toEqual([14, 28, 40]);
        const key = parseVerifierKey(verifierKeyString("w1", publicKey));
        const head = verifyCheckpoint(checkpoints.at(-1)!.note, key);
        expect(head).toMatchObject({ origin: "w1", size: 40 });
        const other = generateKeyPairSync("ed25519");
        expect(() => verifyCheckpoint(checkpoints[0]!.note, verifierOf("w1", other.publicKey))).toThrow(
          /no signature by w1/,
        );
      });

      it("proves a record's inclusion and the consistency of two checkpoints", async () => {
        const p = await proveInclusion(store, "w1", 17);
        expect(p.record.call_id).toBe("call-17");
        const head = verifyCheckpoint(p.checkpoint, verifierOf("w1", publicKey));
        verifyInclusion(
          p.leaf_index,
          p.tree_size,
          Buffer.from(p.record.leaf_hash, "hex"),
          p.proof.map((h) => Buffer.from(h, "base64")),
          head.root,
        );
        const c = await proveConsistency(store, "w1", 14, 28);
        const [h1, h2] = [
          verifyCheckpoint(c.checkpoint1, verifierOf("w1", publicKey)),
          verifyCheckpoint(c.checkpoint2, verifierOf("w1", publicKey)),
        ];
        verifyConsistency(
          14,
          28,
          c.proof.map((h) => Buffer.from(h, "base64")),
          h1.root,
          h2.root,
        );
        await expect(proveInclusion(store, "w1", 41)).rejects.toThrow(/not covered/);
      });

      it("verifies an intact log", async () => {
        const report = await verifyAudit(store, trusted);
        expect(report.ok).toBe(true);
        expect(report.logs[0]).toMatchObject({
          log: "w1",
          records: 40,
          checkpoints: 3,
          verifiedCheckpoints: 3,
        });
      });
    });

    it("keeps one log per writer: two writers in one store never share a sequence, and both verify", async () => {
      const store = await harness.open();
      const a = await openAuditLog(store, {
        logId: "instance-a",
        flushMs: 1,
        checkpoints: { key: privateKey, every: 5, seconds: 0 },
      });
      const b = await openAuditLog(store, {
        logId: "instance-b",
        flushMs: 1,
        checkpoints: { key: privateKey, every: 5, seconds: 0 },
      });
      for (let i = 1; i <= 12; i++) {
        a.append(fields(i, { call_id: `a-${i}` }));
        b.append(fields(i, { call_id: `b-${i}` }));
      }
      await Promise.all([a.close(), b.close()]);
      expect((await store.query({ user: "alice", limit: 100 })).records).toHaveLength(12);
      const report = await verifyAudit(store, trusted);
      expect(report.logs.map((l) => [l.log, l.records, l.finding])).toEqual([
        ["instance-a", 12, null],
        ["instance-b", 12, null],
      ]);
      // a writer that restarts continues its own log
      const again = await openAuditLog(store, {
        logId: "instance-a",
        flushMs: 1,
        checkpoints: { key: privateKey, every: 5, seconds: 0 },
      });
      expect(again.append(fields(13))).toBe(13);
      await again.close();
      expect((await verifyAudit(store, trusted)).ok).toBe(true);
      await store.close();
    });

    describe("tampering is caught and named", () => {
      const attacks: [
        string,
        (s: AuditStore) => Promise<void>,
        { seq: number; problem: string; message: RegExp },
      ][] = [
        [
          "one byte of a stored record edited",
          async (s) => {
            const [row] = await harness.exec(
              s,
              "SELECT record FROM audit_records WHERE log = ? AND seq = ?",
              ["t", 23],
            );
            const record = String(row!["record"]).replace('"i":23', '"i":93');
            await harness.exec(s, "UPDATE audit_records SET record = ? WHERE log = ? AND seq = ?", [
              record,
              "t",
              23,
            ]);
          },
          { seq: 23, problem: "edited", message: /record 23 does not match its leaf hash/ },
        ],
        [
          "a row deleted",
          (s) =>
            harness.exec(s, "DELETE FROM audit_records WHERE log = ? AND seq = ?", ["t", 17]).then(() => {}),
          { seq: 17, problem: "deleted", message: /record 17 is missing/ },
        ],
        [
          "two rows swapped",
          async (s) => {
            const rows = await harness.exec(
              s,
              "SELECT * FROM audit_records WHERE log = ? AND seq IN (?, ?) ORDER BY seq",
              ["t", 8, 9],
            );
            const cols = [
              "record",
              "leaf_hash",
              "time",
              "tenant",
              "user",
              "tool",
              "decision",
              "agent",
              "call_id",
            ];
            for (const [row, seq] of [
              [rows[1]!, 8],
              [rows[0]!, 9],
            ] as const) {
              await harness.exec(
                s,
                `UPDATE audit_records SET ${cols.map((c) => `${c === "user" ? '"user"' : c} = ?`).join(", ")} WHERE log = ? AND seq = ?`,
                [...cols.map((c) => row[c]), "t", seq],
              );
            }
          },
          { seq: 8, problem: "reordered", message: /the row at 8 holds record 9/ },
        ],
        [
          "a checkpoint signature replaced",
          async (s) => {
            const [cp] = await harness.exec(
              s,
              "SELECT root FROM audit_checkpoints WHERE log = ? AND size = ?",
              ["t", 28],
            );
            const forger = generateKeyPairSync("ed25519").privateKey;
            const note = signCheckpoint(
              { origin: "t", size: 28, root: Buffer.from(String(cp!["root"]), "hex") },
              "t",
              forger,
            );
            await harness.exec(s, "UPDATE audit_checkpoints SET note = ? WHERE log = ? AND size = ?", [
              note,
              "t",
              28,
            ]);
          },
          { seq: 28, problem: "forged_checkpoint", message: /checkpoint at size 28: .*no signature by t/ },
        ],
        [
          "an indexed column edited to change who a query finds",
          (s) =>
            harness
              .exec(s, `UPDATE audit_records SET "user" = ? WHERE log = ? AND seq = ?`, ["mallory", "t", 12])
              .then(() => {}),
          { seq: 12, problem: "edited", message: /indexed column user/ },
        ],
        [
          "records rewritten with recomputed hashes",
          async (s) => {
            // A careful forger: edit record 5 and recompute every later leaf hash and link, so the chain holds.
            const rows = await harness.exec(
              s,
              "SELECT seq, record FROM audit_records WHERE log = ? ORDER BY seq",
              ["t"],
            );
            let prev = "";
            for (const row of rows) {
              const seq = Number(row["seq"]);
              const record = JSON.parse(String(row["record"])) as Record<string, unknown>;
              if (seq === 5) record["decision"] = "allow";
              if (seq > 5) record["prev_hash"] = prev;
              const text = JSON.stringify(
                Object.fromEntries(Object.entries(record).sort(([a], [b]) => (a < b ? -1 : 1))),
              );
              prev = leafHash(text);
              if (seq >= 5) {
                await harness.exec(
                  s,
                  "UPDATE audit_records SET record = ?, leaf_hash = ?, decision = ? WHERE log = ? AND seq = ?",
                  [text, prev, record["decision"], "t", seq],
                );
              }
            }
          },
          {
            seq: 14,
            problem: "edited",
            message: /records up to 14 do not hash to the root the checkpoint signs/,
          },
        ],
        [
          "records deleted from the end",
          (s) =>
            harness.exec(s, "DELETE FROM audit_records WHERE log = ? AND seq > ?", ["t", 26]).then(() => {}),
          { seq: 27, problem: "deleted", message: /covers 28 records but only 26 remain/ },
        ],
      ];

      for (const [what, attack, expected] of attacks) {
        it(`${what}: verify fails at seq ${expected.seq} with ${expected.problem}`, async () => {
          const store = await harness.open();
          const log = await writeLog(store, "t", 30);
          await log.close();
          expect((await verifyAudit(store, trusted)).ok).toBe(true);
          await attack(store);
          const report = await verifyAudit(store, trusted);
          expect(report.ok).toBe(false);
          const finding = report.logs[0]!.finding!;
          expect(finding).toMatchObject({ log: "t", seq: expected.seq, problem: expected.problem });
          expect(finding.message).toMatch(expected.message);
          await store.close();
        });
      }

      it("refuses to continue a log whose signed checkpoint covers records that are gone", async () => {
        const store = await harness.open();
        await (await writeLog(store, "t", 30)).close();
        await harness.exec(store, "DELETE FROM audit_records WHERE log = ? AND seq > ?", ["t", 25]);
        await expect(
          openAuditLog(store, { logId: "t", checkpoints: { key: privateKey, every: 10, seconds: 0 } }),
        ).rejects.toThrow(/checkpoint at size 30 but only 25 records/);
        await store.close();
      });
    });
  });
}
