/**
 * One suite for every audit store: the same appends, queries, checkpoints, proofs, verification and tamper
 * attacks, run against SQLite and against PostgreSQL.
 */
import { spawn } from "node:child_process";
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { mkdtempSync, readFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  parseVerifierKey,
  signCheckpoint,
  verifierKeyString,
  verifierOf,
  verifyCheckpoint,
} from "../../src/audit/checkpoint.js";
import { type AuditLog, localHost, openAuditLog } from "../../src/audit/log.js";
import { verifyConsistency, verifyInclusion } from "../../src/audit/merkle.js";
import { proveConsistency, proveInclusion } from "../../src/audit/proof.js";
import { type AuditFields, leafHash, seal } from "../../src/audit/record.js";
import { BLOCK_SIZE, keysOf } from "../../src/audit/sqlite-index.js";
import { type AuditStore, storeError } from "../../src/audit/store.js";
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

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

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
        await expect(proveInclusion(store, "w1", 17, 14)).rejects.toThrow(
          /not covered by the checkpoint of size 14/,
        );
        // a record the log does not have is not "newer than the latest checkpoint": it is not there
        await expect(proveInclusion(store, "w1", 10_000)).rejects.toMatchObject({
          code: "ERR_NOT_FOUND",
          message: "no record 10000 in log w1",
        });
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

    describe("one writer per log", () => {
      const opts = { flushMs: 1, checkpoints: { key: privateKey, every: 5, seconds: 0 } };

      it("refuses a second writer for a log that is held, naming the log, the holder and the fix", async () => {
        const store = await harness.open();
        const first = await openAuditLog(store, { ...opts, logId: "held", label: "instance one" });
        const refusal = await openAuditLog(store, { ...opts, logId: "held" }).catch((e: unknown) => e);
        expect(refusal).toMatchObject({ code: "ERR_CONFLICT" });
        expect((refusal as Error).message).toMatch(
          new RegExp(
            `audit log held is being written by another writer: instance one \\(host ${escapeRegExp(localHost())}, pid ${process.pid}, since .*\\)\\. .*give each instance its own audit\\.log_id`,
          ),
        );
        first.append(fields(1));
        await first.close(); // a clean close releases the claim: the next writer need not wait
        const next = await openAuditLog(store, { ...opts, logId: "held" });
        expect(next.append(fields(2))).toBe(2);
        await next.close();
        expect((await verifyAudit(store, trusted)).ok).toBe(true);
        await store.close();
      });

      it("gives a default log id's next process the next free slot, and the same slot after a restart", async () => {
        const store = await harness.open();
        const a = await openAuditLog(store, { ...opts, logId: "onbehalf@h", slots: true });
        const b = await openAuditLog(store, { ...opts, logId: "onbehalf@h", slots: true });
        expect([a.logId, b.logId]).toEqual(["onbehalf@h", "onbehalf@h/2"]);
        b.append(fields(1));
        await b.close();
        const again = await openAuditLog(store, { ...opts, logId: "onbehalf@h", slots: true });
        expect(again.logId).toBe("onbehalf@h/2");
        expect(again.append(fields(2))).toBe(2); // it continues that log
        await Promise.all([a.close(), again.close()]);
        expect((await verifyAudit(store, trusted)).logs.map((l) => [l.log, l.records, l.finding])).toEqual([
          ["onbehalf@h/2", 2, null],
        ]);
        await store.close();
      });

      it("lets exactly one of two writers claiming at once win", async () => {
        const store = await harness.open();
        const results = await Promise.allSettled([
          openAuditLog(store, { ...opts, logId: "race" }),
          openAuditLog(store, { ...opts, logId: "race" }),
          openAuditLog(store, { ...opts, logId: "race" }),
        ]);
        expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
        for (const r of results) if (r.status === "fulfilled") await r.value.close();
        await store.close();
      });

      it("takes over at once from a holder on this host whose process is gone (kill -9), not from a live one", async () => {
        const store = await harness.open();
        const child = spawn(process.execPath, ["-e", "0"]);
        const deadPid = await new Promise<number>((resolve) => child.once("exit", () => resolve(child.pid!)));
        const claim = (pid: number) => ({
          holder: `${hostname()}:${pid}:x`,
          host: localHost(),
          pid,
          label: "crashed",
        });
        const never = { staleMs: 3_600_000, gone: () => false };
        expect(await store.claim("crashed", claim(deadPid), never)).toEqual({ previous: null });
        const log = await openAuditLog(store, { ...opts, logId: "crashed" });
        log.append(fields(1));
        await log.close();
        expect(await store.claim("alive", claim(process.ppid), never)).toEqual({ previous: null });
        await expect(openAuditLog(store, { ...opts, logId: "alive" })).rejects.toThrow(/pid \d+/);
        // The same hostname in another pid space (a container with host networking): its pids are not ours
        // to test, so its claim is not taken at once, even if no process of ours has that pid.
        const elsewhere = { ...claim(deadPid), host: hostname() };
        expect(await store.claim("neighbour", elsewhere, never)).toEqual({ previous: null });
        await expect(openAuditLog(store, { ...opts, logId: "neighbour" })).rejects.toThrow(/being written/);
        await store.close();
      });

      it("fences a writer whose stale claim was taken over: nothing more of it commits, and it fails closed", async () => {
        const store = await harness.open();
        const old = await openAuditLog(store, { ...opts, logId: "fenced" });
        old.append(fields(1));
        await old.flush();
        await new Promise((r) => setTimeout(r, 30));
        // Another writer finds the claim stale (here after 20 ms) and takes the log over.
        const taker = await openAuditLog(store, { ...opts, logId: "fenced", staleMs: 20 });
        taker.append(fields(2));
        await taker.flush();
        old.append(fields(3));
        await expect(old.flush()).rejects.toThrow(/taken over by another writer/);
        expect(old.healthy).toBe(false);
        expect(old.problem).toMatch(/restart it/);
        old.append(fields(4)); // still accepted into the queue (the governor denies), never written
        await expect(old.acknowledged(old.lastSeq)).rejects.toThrow(/taken over/);
        await taker.close();
        await old.close().catch(() => {});
        const rows = await store.rows("fenced", 1, 100);
        expect(rows.map((r) => JSON.parse(r.canonical).call_id)).toEqual(["call-1", "call-2"]);
        expect((await verifyAudit(store, trusted)).ok).toBe(true);
        await store.close();
      });
    });

    describe("records the store cannot hold as they are", () => {
      it("stores identity fields with control characters or lone surrogates as their digest", async () => {
        const store = await harness.open();
        const log = await openAuditLog(store, {
          logId: "poison",
          flushMs: 1,
          checkpoints: { key: privateKey, every: 5, seconds: 0 },
        });
        log.append(
          fields(1, { tool: "x\u0000y", user: "eve\ud800", chain: ["a\u001b[31m", "ok"], agent: "\u0085" }),
        );
        log.append(fields(2));
        await log.close();
        const [poisoned, clean] = (await store.rows("poison", 1, 10)).map((r) => JSON.parse(r.canonical));
        expect(poisoned.tool).toMatch(/^unsafe:sha256:[0-9a-f]{64}$/);
        expect(poisoned.user).toMatch(/^unsafe:sha256:/);
        expect(poisoned.agent).toMatch(/^unsafe:sha256:/);
        expect(poisoned.chain).toEqual([expect.stringMatching(/^unsafe:sha256:/), "ok"]);
        expect(clean.tool).toBe("lookup");
        expect((await verifyAudit(store, trusted)).ok).toBe(true);
        await store.close();
      });

      it("writes the rest of a batch the store refuses for one record's content, and that record as a stub", async () => {
        const real = await harness.open();
        // A fault injector around the real store (a stand-in for content a database refuses): any batch
        // holding the user "mélanie" is refused for its content, as a database refuses text it cannot encode.
        const refusing: AuditStore = {
          ...real,
          append: (batch, holder) =>
            batch.some((r) => r.fields.user === "m\u00e9lanie")
              ? Promise.reject(storeError("rejected", "invalid byte sequence"))
              : real.append(batch, holder),
        };
        const log = await openAuditLog(refusing, {
          logId: "stub",
          flushMs: 50,
          batchSize: 100,
          checkpoints: { key: privateKey, every: 100, seconds: 0 },
        });
        for (let i = 1; i <= 10; i++)
          log.append(fields(i, i === 4 ? { call_id: "poison", user: "m\u00e9lanie" } : {}));
        await log.flush();
        expect(log.healthy).toBe(true);
        expect(log.stubbed).toBe(1);
        for (let i = 11; i <= 20; i++) log.append(fields(i));
        await log.close();
        const rows = (await real.rows("stub", 1, 100)).map((r) => JSON.parse(r.canonical));
        expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
        expect(rows[3]).toMatchObject({
          call_id: "poison",
          user: expect.stringMatching(/^unsafe:sha256:/),
          args: { withheld: "the record could not be stored as it was" },
          decision: fields(4).decision,
          reason: expect.stringContaining("invalid byte sequence"),
        });
        expect(rows[4]).toMatchObject({ call_id: "call-5", args: { i: 5 } });
        expect((await verifyAudit(real, trusted)).ok).toBe(true);
        await real.close();
      });
    });

    it("finds a run's records by trace, also in a store made before records were found by trace", async () => {
      const store = await harness.open();
      const log = await openAuditLog(store, {
        logId: "traced",
        flushMs: 1,
        checkpoints: { key: privateKey, every: 5, seconds: 0 },
      });
      for (let i = 1; i <= 12; i++) log.append(fields(i, { trace_id: i % 3 === 0 ? "run-a" : `run-${i}` }));
      await log.close();
      const traced = async () =>
        (await store.query({ trace_id: "run-a" })).records.map((r) => r.seq).sort((a, b) => a - b);
      expect(await traced()).toEqual([3, 6, 9, 12]);
      // The store as an older version made it: no trace column. Setting it up again adds and fills it.
      await harness.exec(store, "DROP INDEX IF EXISTS audit_by_trace", []);
      await harness.exec(store, "ALTER TABLE audit_records DROP COLUMN trace_id", []);
      await store.init();
      expect(await traced()).toEqual([3, 6, 9, 12]);
      expect((await verifyAudit(store, trusted)).ok).toBe(true); // the column agrees with every record
      await store.close();
    });

    describe("forgeries that rewrite the whole database", () => {
      /** The genuine log "t", then returns its latest signed checkpoint (kept outside the database). */
      async function genuine(store: AuditStore): Promise<string> {
        await (await writeLog(store, "t", 30)).close();
        return (await store.latestCheckpoint("t"))!.note;
      }
      /** The attacker's log "t": 30 records of their choosing, hashes consistent, its own checkpoints or none. */
      async function rewrite(store: AuditStore, key?: KeyObject): Promise<void> {
        await harness.exec(store, "DELETE FROM audit_records WHERE log = ?", ["t"]);
        await harness.exec(store, "DELETE FROM audit_checkpoints WHERE log = ?", ["t"]);
        const log = await openAuditLog(store, {
          logId: "t",
          flushMs: 1,
          ...(key === undefined ? {} : { checkpoints: { key, every: 10, seconds: 0 } }),
        });
        for (let i = 1; i <= 30; i++) log.append(fields(i, { user: "nobody" }));
        await log.close();
      }

      /** Records appended with database access only: correct hashes, linked to the last one, no key. */
      async function append(store: AuditStore, count: number): Promise<void> {
        const head = (await store.head("t"))!;
        let prev = head.leafHash;
        for (let i = 1; i <= count; i++) {
          const sealed = seal(
            fields(100 + i, { tool: "issue_refund", user: "mallory" }),
            "t",
            head.seq + i,
            prev,
          );
          const f = sealed.fields;
          await harness.exec(
            store,
            'INSERT INTO audit_records (log, seq, record, leaf_hash, time, tenant, "user", tool, decision, agent, call_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
            [
              sealed.log,
              sealed.seq,
              sealed.canonical,
              sealed.leafHash,
              f.time,
              f.tenant,
              f.user,
              f.tool,
              f.decision,
              f.agent,
              f.call_id,
            ],
          );
          await indexLikeTheStore(store, sealed.log, sealed.seq, f);
          prev = sealed.leafHash;
        }
      }
      /** A forger with database access keeps a block index (SQLite's) in step with the rows it adds. */
      async function indexLikeTheStore(store: AuditStore, log: string, seq: number, f: AuditFields) {
        if (store.blockIndex === undefined) return;
        const block = Math.floor(seq / BLOCK_SIZE);
        for (const key of keysOf(f))
          await harness.exec(store, "INSERT OR IGNORE INTO audit_keys (key, log, block) VALUES (?, ?, ?)", [
            key,
            log,
            block,
          ]);
        await harness.exec(
          store,
          `INSERT INTO audit_blocks (log, block, min_time, max_time) VALUES (?, ?, ?, ?)
           ON CONFLICT (log, block) DO UPDATE SET max_time = max(max_time, excluded.max_time)`,
          [log, block, f.time, f.time],
        );
      }
      const signing = { flushMs: 1, checkpoints: { key: privateKey, every: 10, seconds: 0 } };

      it("fails records added after a clean stop, and the writer refuses to sign them", async () => {
        const store = await harness.open();
        await genuine(store);
        await append(store, 5);
        // verify: a clean stop signs everything it wrote, so these five are nobody's (even with a tail allowed)
        const report = await verifyAudit(store, { ...trusted, unsignedTail: 1_000 });
        expect(report.logs[0]!.finding).toMatchObject({ seq: 31, problem: "unverified" });
        expect(report.logs[0]!.finding!.message).toMatch(/no writer holds the log/);
        // the genuine writer, started again, refuses to put its signature on them
        await expect(openAuditLog(store, { logId: "t", ...signing })).rejects.toThrow(
          /5 records \(seq 31 to 35\) follow its last signed checkpoint, yet its last writer stopped cleanly/,
        );
        // unless the operator, having checked them, says so; the log then names what it resumed over
        const resumed = await openAuditLog(store, { logId: "t", ...signing, acceptUnsignedTail: true });
        expect(resumed.resumed).toMatchObject({ from: 31, to: 35, previous: null });
        await resumed.close();
        await store.close();
      });

      it("keeps a clean stop clean though a fake claim row says the writer crashed: the writer's journal knows", async () => {
        const journal = mkdtempSync(join(tmpdir(), "onbehalf-journal-"));
        const store = await harness.open();
        const first = await openAuditLog(store, { logId: "t", ...signing, journal });
        for (let i = 1; i <= 30; i++) first.append(fields(i));
        await first.close();
        await append(store, 5);
        // The claim a crashed writer would have left, written with database access (a stand-in for an INSERT).
        const ghost = { holder: "ghost:1:x", host: "elsewhere", pid: 1, label: "onbehalf serve" };
        expect(await store.claim("t", ghost, { staleMs: 20_000, gone: () => false })).toEqual({
          previous: null,
        });
        // What the database alone says: a running writer, whose five unsigned records are its tail.
        expect((await verifyAudit(store, { ...trusted, unsignedTail: 1_000 })).ok).toBe(true);
        // What this host's journal says: its writer stopped cleanly at 30, and nothing signed since.
        const checked = await verifyAudit(store, { ...trusted, unsignedTail: 1_000, journal });
        expect(checked.logs[0]!.finding).toMatchObject({ seq: 31, problem: "unverified" });
        // A claim not renewed within staleMs is no running writer either.
        await new Promise((r) => setTimeout(r, 20));
        const stale = await verifyAudit(store, { ...trusted, unsignedTail: 1_000, staleMs: 10 });
        expect(stale.logs[0]!.finding).toMatchObject({ seq: 31, problem: "unverified" });
        // The genuine writer, started again once the ghost claim is stale, does not sign them as a crash's tail.
        await expect(openAuditLog(store, { logId: "t", ...signing, journal, staleMs: 10 })).rejects.toThrow(
          /5 records \(seq 31 to 35\) follow its last signed checkpoint, yet its last writer stopped cleanly/,
        );
        // Nor when the checkpoint its clean stop signed is deleted to make the tail look longer.
        await harness.exec(store, "DELETE FROM audit_checkpoints WHERE log = ? AND size = 30", ["t"]);
        await expect(openAuditLog(store, { logId: "t", ...signing, journal, staleMs: 10 })).rejects.toThrow(
          /stopped cleanly at .* and signed 30 records .*the latest checkpoint left signs \d+: checkpoints were removed/,
        );
        await store.close();
      });

      it("takes a journal for another database as no evidence, and a rewritten last record as a rewrite", async () => {
        const journal = mkdtempSync(join(tmpdir(), "onbehalf-journal-"));
        const store = await harness.open();
        const first = await openAuditLog(store, { logId: "t", ...signing, journal });
        for (let i = 1; i <= 30; i++) first.append(fields(i));
        await first.close();
        // A new, empty database for the same log id: the journal does not describe it.
        const fresh = await harness.open();
        const next = await openAuditLog(fresh, { logId: "t", ...signing, journal });
        next.append(fields(1));
        await next.close();
        // The journal now describes the new database (one record).
        expect(JSON.parse(readFileSync(join(journal, "t.json"), "utf8"))).toMatchObject({
          state: "closed",
          size: 1,
        });
        // A database holding that many records, but another record there, was rewritten.
        await rewrite(store);
        await expect(openAuditLog(store, { logId: "t", ...signing, journal })).rejects.toThrow(
          /record 1 is not the one its last writer on this host signed when it stopped cleanly/,
        );
        await Promise.all([store.close(), fresh.close()]);
      });

      it("refuses to continue a log rewritten from scratch, or whose checkpoint another key signed", async () => {
        const store = await harness.open();
        await genuine(store);
        await rewrite(store);
        await expect(openAuditLog(store, { logId: "t", ...signing })).rejects.toThrow(
          /30 records \(seq 1 to 30\) follow its last signed checkpoint/,
        );
        const other = await harness.open();
        await genuine(other);
        await rewrite(other, generateKeyPairSync("ed25519").privateKey);
        await expect(openAuditLog(other, { logId: "t", ...signing })).rejects.toThrow(
          /its latest checkpoint \(size 30\) does not verify with this writer's key/,
        );
        await Promise.all([store.close(), other.close()]);
      });

      it("fails a log wiped of its records while its checkpoints remain", async () => {
        const store = await harness.open();
        await genuine(store);
        await harness.exec(store, "DELETE FROM audit_records WHERE log = ?", ["t"]);
        const report = await verifyAudit(store, trusted);
        expect(report.ok).toBe(false);
        expect(report.logs.map((l) => [l.log, l.finding?.problem])).toEqual([["t", "deleted"]]);
        await store.close();
      });

      it("fails a log no trusted checkpoint covers (its checkpoints deleted), instead of passing 0 of 0", async () => {
        const store = await harness.open();
        await genuine(store);
        await rewrite(store);
        const report = await verifyAudit(store, trusted);
        expect(report.ok).toBe(false);
        expect(report.logs[0]!.finding).toMatchObject({ seq: 1, problem: "unverified" });
        expect(report.logs[0]!.finding!.message).toMatch(
          /no checkpoint signed by a trusted key covers its 30 records/,
        );
        // An operator may accept unsigned tails explicitly: then it is the checkpoint kept outside that decides.
        expect((await verifyAudit(store, { ...trusted, acceptUnsigned: true })).ok).toBe(true);
        await store.close();
      });

      it("fails a log re-signed with the attacker's own key", async () => {
        const store = await harness.open();
        await genuine(store);
        await rewrite(store, generateKeyPairSync("ed25519").privateKey);
        const finding = (await verifyAudit(store, trusted)).logs[0]!.finding;
        expect(finding).toMatchObject({ seq: 30, problem: "forged_checkpoint" }); // its one checkpoint, at 30
        await store.close();
      });

      it("fails a rewritten log against a checkpoint kept outside the database, whatever it holds", async () => {
        const store = await harness.open();
        const kept = await genuine(store);
        await rewrite(store);
        const report = await verifyAudit(store, {
          ...trusted,
          external: [kept],
          acceptUnsigned: true,
        });
        expect(report.logs[0]!.finding).toMatchObject({ seq: 30, problem: "edited" });
        expect(report.logs[0]!.finding!.message).toMatch(/do not hash to the root the checkpoint signs/);
        // A log deleted whole is named too: the kept checkpoint covers records that are gone.
        await harness.exec(store, "DELETE FROM audit_records WHERE log = ?", ["t"]);
        const gone = await verifyAudit(store, { ...trusted, external: [kept] });
        expect(gone.logs[0]!.finding).toMatchObject({ log: "t", problem: "deleted" });
        await store.close();
      });

      it("fails a second log placed beside the genuine one when only published keys are trusted", async () => {
        const store = await harness.open();
        await genuine(store);
        const forger = generateKeyPairSync("ed25519").privateKey;
        const fake = await openAuditLog(store, {
          logId: "t-shadow",
          flushMs: 1,
          checkpoints: { key: forger, every: 5, seconds: 0 },
        });
        for (let i = 1; i <= 10; i++) fake.append(fields(i));
        await fake.close();
        const report = await verifyAudit(store, { keys: [verifierOf("t", publicKey)] });
        expect(report.logs.map((l) => [l.log, l.finding?.problem ?? null])).toEqual([
          ["t", null],
          ["t-shadow", "forged_checkpoint"],
        ]);
        await store.close();
      });
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
        // Pages of 4 (below): records 9 to 12 are a page, read and checked on a worker like any other.
        [
          "the first row of a page deleted",
          remove(9, 9),
          { seq: 9, problem: "deleted", message: /^record 9 is missing: deleted$/ },
        ],
        [
          "a whole page of rows deleted",
          remove(9, 12),
          { seq: 9, problem: "deleted", message: /^record 9 to 12 is missing: deleted$/ },
        ],
        [
          "the last rows of a page deleted",
          remove(11, 12),
          { seq: 11, problem: "deleted", message: /^record 11 to 12 is missing: deleted$/ },
        ],
        [
          "the first record of a page linked elsewhere, it and every record after it rehashed",
          (s) => relink(s, 9, "0".repeat(64)),
          { seq: 9, problem: "deleted", message: /record 9 does not link to record 8/ },
        ],
        [
          "the last rows of a page deleted, the records after them relinked over the gap",
          async (s) => {
            await remove(11, 12)(s);
            const [ten] = await harness.exec(
              s,
              "SELECT leaf_hash FROM audit_records WHERE log = ? AND seq = ?",
              ["t", 10],
            );
            await relink(s, 13, String(ten!["leaf_hash"]));
          },
          { seq: 11, problem: "deleted", message: /^record 11 to 12 is missing: deleted$/ },
        ],
        [
          "the first record of a page linked elsewhere, its own hash recomputed",
          async (s) => {
            const [row] = await harness.exec(
              s,
              "SELECT record FROM audit_records WHERE log = ? AND seq = ?",
              ["t", 9],
            );
            const record = String(row!["record"]).replace(
              /"prev_hash":"[0-9a-f]{64}"/,
              `"prev_hash":"${"0".repeat(64)}"`,
            );
            await harness.exec(
              s,
              "UPDATE audit_records SET record = ?, leaf_hash = ? WHERE log = ? AND seq = ?",
              [record, leafHash(record), "t", 9],
            );
          },
          { seq: 9, problem: "deleted", message: /record 9 does not link to record 8/ },
        ],
        [
          "a copy of a record added before the first one (a row no page reads)",
          (s) =>
            harness
              .exec(
                s,
                `INSERT INTO audit_records (log, seq, record, leaf_hash, time, tenant, "user", tool, decision, agent, call_id, trace_id)
                 SELECT log, 0, record, leaf_hash, time, tenant, "user", tool, decision, agent, call_id, trace_id
                 FROM audit_records WHERE log = ? AND seq = ?`,
                ["t", 8],
              )
              .then(() => {}),
          {
            seq: 0,
            problem: "edited",
            message:
              /^a row numbered 0 is not a record of the log \(its records are numbered 1 to 30\): it was added$/,
          },
        ],
        [
          "records deleted from the end",
          (s) =>
            harness.exec(s, "DELETE FROM audit_records WHERE log = ? AND seq > ?", ["t", 26]).then(() => {}),
          { seq: 27, problem: "deleted", message: /covers 28 records but only 26 remain/ },
        ],
      ];

      /** An attack deleting records `from` to `to`. */
      function remove(from: number, to: number): (s: AuditStore) => Promise<void> {
        return (s) =>
          harness
            .exec(s, "DELETE FROM audit_records WHERE log = ? AND seq BETWEEN ? AND ?", ["t", from, to])
            .then(() => {});
      }

      /** Records `from` on rewritten to link to `prev`, then each to the one before it, their hashes recomputed. */
      async function relink(s: AuditStore, from: number, prev: string): Promise<void> {
        const rows = await harness.exec(
          s,
          "SELECT seq, record FROM audit_records WHERE log = ? AND seq >= ? ORDER BY seq",
          ["t", from],
        );
        let link = prev;
        for (const row of rows) {
          const record = String(row["record"]).replace(/"prev_hash":"[0-9a-f]{64}"/, `"prev_hash":"${link}"`);
          link = leafHash(record);
          await harness.exec(
            s,
            "UPDATE audit_records SET record = ?, leaf_hash = ? WHERE log = ? AND seq = ?",
            [record, link, "t", row["seq"]],
          );
        }
      }

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
          // The same report in pages of 4 checked on this thread, and on workers (which read a SQLite file's
          // pages themselves, each before the ones ahead of it are known).
          expect(await verifyAudit(store, { ...trusted, pageSize: 4, threads: 0 })).toEqual(report);
          expect(await verifyAudit(store, { ...trusted, pageSize: 4, threads: 2 })).toEqual(report);
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
