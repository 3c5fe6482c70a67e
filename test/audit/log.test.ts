import { createHash, generateKeyPairSync } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { canonicalJson, jsonString } from "../../src/audit/canonical.js";
import { openAuditLog } from "../../src/audit/log.js";
import { type AuditFields, GENESIS_HASH, recordOf, seal } from "../../src/audit/record.js";
import { auditRowOf, openSqliteStore } from "../../src/audit/sqlite.js";
import { type AuditStore, storeError } from "../../src/audit/store.js";
import { verifyAudit } from "../../src/audit/verify.js";

function fields(i: number, over: Partial<AuditFields> = {}): AuditFields {
  return {
    kind: "attempt",
    time: new Date(Date.UTC(2026, 10, 28, 12, 0, 0, i)).toISOString(),
    tenant: "acme",
    user: i % 2 === 0 ? "alice" : "bob",
    email: null,
    agent: "bot",
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

const tempDb = () => join(mkdtempSync(join(tmpdir(), "onbehalf-audit-")), "audit.db");

describe("canonical JSON (RFC 8785)", () => {
  it("sorts keys by code unit, drops undefined, and writes numbers as ECMAScript does", () => {
    expect(canonicalJson({ b: 1, a: [true, null, "x"], c: undefined, é: 1e21, A: 0.5 })).toBe(
      '{"A":0.5,"a":[true,null,"x"],"b":1,"é":1e+21}',
    );
    expect(canonicalJson({ z: { y: 1, x: [{ b: 2, a: 1 }] } })).toBe('{"z":{"x":[{"a":1,"b":2}],"y":1}}');
    expect(canonicalJson(Number.NaN)).toBe("null");
  });

  it("writes every string as JSON.stringify does: quotes, backslashes, controls, non-ASCII, lone surrogates", () => {
    const edges = ['a"b', "a\\b", "tab\there", "\u007f", "\u0000", "é", "\ud800", "𝄞", "", " ~"];
    for (const s of edges) expect(jsonString(s)).toBe(JSON.stringify(s));
    fc.assert(
      fc.property(
        fc.oneof(fc.string(), fc.string({ unit: "binary" }), fc.string({ unit: "grapheme-ascii" })),
        (s) => {
          expect(jsonString(s)).toBe(JSON.stringify(s));
          expect(canonicalJson({ [s]: s })).toBe(`{${JSON.stringify(s)}:${JSON.stringify(s)}}`);
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe("audit log", () => {
  it("seals records in sequence, each linked to the previous one, with an RFC 6962 leaf hash", async () => {
    const store = openSqliteStore(":memory:");
    const log = await openAuditLog(store, { logId: "test", flushMs: 1 });
    expect([log.append(fields(1)), log.append(fields(2))]).toEqual([1, 2]);
    await log.flush();
    const [a, b] = await store.rows("test", 1, 10);
    expect(JSON.parse(a!.canonical).prev_hash).toBe(GENESIS_HASH);
    expect(JSON.parse(b!.canonical).prev_hash).toBe(a!.leafHash);
    const expected = createHash("sha256")
      .update(Buffer.concat([Buffer.from([0]), Buffer.from(b!.canonical)]))
      .digest("hex");
    expect(b!.leafHash).toBe(expected);
    expect(JSON.parse(b!.canonical)).not.toHaveProperty("leaf_hash");
    await log.close();
    await store.close();
  });

  it("writes canonical bytes equal to the generic RFC 8785 serialization of the record", () => {
    const f = fields(7, {
      args: { z: [1, { b: "é", a: null }], "a b": 2.5 },
      shadow: { decision: "deny", reason_code: "rule_deny", reason: 'quote " and \\', rule: "r" },
    });
    const sealed = seal(f, "log-1", 42, GENESIS_HASH);
    expect(sealed.canonical).toBe(canonicalJson({ ...f, log: "log-1", seq: 42, prev_hash: GENESIS_HASH }));
    expect(recordOf(sealed)).toMatchObject({
      seq: 42,
      log: "log-1",
      leaf_hash: sealed.leafHash,
      call_id: "call-7",
    });
  });

  it("writes by group commit and continues the sequence and the chain after a restart", async () => {
    const path = tempDb();
    let store = openSqliteStore(path);
    const transactions: number[] = [];
    const counting: AuditStore = {
      ...store,
      append: (batch, holder) => {
        transactions.push(batch.length);
        return store.append(batch, holder);
      },
    };
    let log = await openAuditLog(counting, { logId: "writer-1", batchSize: 100, flushMs: 50 });
    for (let i = 0; i < 250; i++) log.append(fields(i));
    expect(log.committed).toBe(0); // append never waits for the store
    await new Promise((r) => setImmediate(r));
    expect(transactions).toEqual([100, 100, 50]); // a full batch starts the writer, which drains the queue
    expect(log.committed).toBe(250);
    log.append(fields(250));
    await log.close();
    await store.close();

    store = openSqliteStore(path);
    log = await openAuditLog(store, { logId: "writer-1" });
    expect(log.append(fields(251))).toBe(252);
    await log.close();
    const rows = await store.rows("writer-1", 1, 1000);
    expect(rows).toHaveLength(252);
    for (let i = 1; i < rows.length; i++)
      expect(JSON.parse(rows[i]!.canonical).prev_hash).toBe(rows[i - 1]!.leafHash);
    await store.close();
  });

  it("answers queries by user, tool, decision and time, newest first, with a cursor", async () => {
    const store = openSqliteStore(":memory:");
    const log = await openAuditLog(store, { logId: "q" });
    for (let i = 0; i < 30; i++) log.append(fields(i));
    await log.flush();
    const alice = await store.query({ user: "alice", limit: 100 });
    expect(alice.records).toHaveLength(15);
    expect(alice.records.every((r) => r.user === "alice")).toBe(true);
    expect(alice.records[0]!.seq).toBeGreaterThan(alice.records[1]!.seq);
    const denies = await store.query({ decision: "deny", tool: "refund" });
    expect(denies.records.map((r) => r.call_id).sort()).toEqual(["call-0", "call-15"]);
    const since = await store.query({ since: fields(25).time });
    expect(since.records).toHaveLength(5);
    const page1 = await store.query({ limit: 12 });
    const page2 = await store.query({ limit: 12, cursor: page1.next_cursor! });
    const page3 = await store.query({ limit: 12, cursor: page2.next_cursor! });
    expect(page3.next_cursor).toBeNull();
    const seqs = [...page1.records, ...page2.records, ...page3.records].map((r) => r.seq);
    expect(seqs).toEqual(Array.from({ length: 30 }, (_, i) => 30 - i));
    await expect(store.query({ cursor: "garbage" })).rejects.toThrow(/cursor/);
    await expect(store.query({ since: "yesterday-ish" })).rejects.toThrow(/ISO 8601/);
    await log.close();
    await store.close();
  });

  it("keeps records queued during an outage small: their arguments are dropped, their digest kept", async () => {
    const real = openSqliteStore(":memory:");
    let down = false;
    // A fault injector around the real store: a stand-in for a database that went away.
    const flaky: AuditStore = {
      ...real,
      append: (batch, holder) =>
        down ? Promise.reject(new Error("connection refused")) : real.append(batch, holder),
    };
    const log = await openAuditLog(flaky, { logId: "small", flushMs: 1 });
    const big = { blob: "x".repeat(65_536) };
    log.append(fields(1, { args: big, args_digest: "sha256:big" }));
    await log.flush();
    down = true;
    log.append(fields(2));
    await new Promise((r) => setTimeout(r, 30)); // the write fails: unhealthy from here on
    expect(log.healthy).toBe(false);
    for (let i = 3; i < 203; i++) log.append(fields(i, { args: big, args_digest: "sha256:big" }));
    down = false;
    await log.flush();
    const rows = (await real.rows("small", 1, 1000)).map((r) => JSON.parse(r.canonical));
    expect(rows).toHaveLength(202);
    expect(rows[0].args).toEqual(big); // written while healthy: whole
    expect(rows[150]).toMatchObject({
      args: { omitted: "not kept: the audit store was unavailable when the call was decided" },
      args_digest: "sha256:big",
    });
    await log.close();
    await real.close();
  });

  it("waits for another process's SQLite write lock without blocking the event loop or failing closed", async () => {
    const path = tempDb();
    const store = openSqliteStore(path);
    const log = await openAuditLog(store, { logId: "shared-file", flushMs: 1 });
    log.append(fields(1));
    await log.flush();
    // Another process (here another connection) holds the write lock for 1.5 s.
    const other = new Database(path);
    other.prepare("BEGIN IMMEDIATE").run();
    const release = setTimeout(() => other.prepare("COMMIT").run(), 1_500);
    let ticks = 0;
    let worstLag = 0;
    let last = Date.now();
    const probe = setInterval(() => {
      ticks++;
      worstLag = Math.max(worstLag, Date.now() - last - 10);
      last = Date.now();
    }, 10);
    for (let i = 2; i <= 50; i++) log.append(fields(i));
    const healthyMeanwhile: boolean[] = [];
    const watch = setInterval(() => healthyMeanwhile.push(log.healthy), 100);
    await log.flush();
    clearInterval(probe);
    clearInterval(watch);
    clearTimeout(release);
    other.close();
    expect(healthyMeanwhile.length).toBeGreaterThan(5);
    expect(healthyMeanwhile.every((h) => h)).toBe(true); // busy is not down: calls are not denied meanwhile
    expect(ticks).toBeGreaterThan(50);
    expect(worstLag).toBeLessThan(300); // never frozen for the lock's 1.5 s (busy_timeout was 5 s)
    expect((await store.rows("shared-file", 1, 100)).map((r) => r.seq)).toEqual(
      Array.from({ length: 50 }, (_, i) => i + 1),
    );
    await log.close();
    await store.close();
  });

  it("turns unhealthy while the store fails, keeps the records, and writes them once it is back", async () => {
    const real = openSqliteStore(":memory:");
    // A fault injector around the real store: a stand-in for a database that is down.
    let down = true;
    const flaky: AuditStore = {
      ...real,
      append: (batch, holder) =>
        down ? Promise.reject(new Error("connection refused")) : real.append(batch, holder),
    };
    const errors: unknown[] = [];
    const log = await openAuditLog(flaky, { logId: "f", flushMs: 1, onError: (e) => errors.push(e) });
    log.append(fields(1));
    log.append(fields(2));
    await new Promise((r) => setTimeout(r, 30));
    expect(log.healthy).toBe(false);
    expect(errors.length).toBeGreaterThan(0);
    down = false;
    await log.flush();
    expect(log.healthy).toBe(true);
    expect((await real.rows("f", 1, 10)).map((r) => r.seq)).toEqual([1, 2]);
    await log.close();
    await real.close();
  });

  it("gives up waiting for a store that hangs: each wait by its own deadline, and a commit still resolves the rest", async () => {
    const real = openSqliteStore(":memory:");
    // A fault injector around the real store: a stand-in for a database that stops answering until released.
    let release: (() => void) | undefined;
    const hanging: AuditStore = {
      ...real,
      append: (batch, holder) =>
        new Promise<void>((resolve, reject) => {
          release = () => real.append(batch, holder).then(resolve, reject);
        }),
    };
    const log = await openAuditLog(hanging, { logId: "h", flushMs: 1, ackTimeoutMs: 400 });
    const started = Date.now();
    const late = log.acknowledged(log.append(fields(1))); // the default limit, 400 ms
    const sooner = log.acknowledged(log.append(fields(2)), 60); // armed after, due first
    const patient = log.acknowledged(log.append(fields(3)), 60_000);
    const when = (p: Promise<void>) =>
      p.then(
        () => ["committed", Date.now() - started] as const,
        (e: Error) => [e.message, Date.now() - started] as const,
      );
    const [soonerOutcome, lateOutcome] = await Promise.all([when(sooner), when(late)]);
    expect(soonerOutcome[0]).toMatch(/did not commit the record within 0.06 s/);
    expect(soonerOutcome[1]).toBeGreaterThanOrEqual(55);
    expect(soonerOutcome[1]).toBeLessThan(350); // not held until the first wait's later deadline
    expect(lateOutcome[0]).toMatch(/did not commit the record within 0.4 s/);
    expect(lateOutcome[1]).toBeGreaterThanOrEqual(395);
    release?.(); // the store answers: the wait still running is resolved by the commit
    await expect(patient).resolves.toBeUndefined();
    await log.close();
    await real.close();
  });

  it("keeps its log when the store cannot say whether a conflicting batch was its own, and gives it up once it can", async () => {
    const real = openSqliteStore(":memory:");
    // A fault injector: every write conflicts (as a batch sent again, or another writer's), and at first the
    // read that would tell which fails too (the database went away in between).
    let readable = false;
    const store: AuditStore = {
      ...real,
      append: () => Promise.reject(storeError("conflict", "duplicate key (injected)")),
      leafHashes: (log, from, to) =>
        readable ? real.leafHashes(log, from, to) : Promise.reject(new Error("connection reset (injected)")),
    };
    const log = await openAuditLog(store, { logId: "c", flushMs: 1 });
    const ack = log.acknowledged(log.append(fields(1)), 60_000);
    ack.catch(() => {});
    await new Promise((r) => setTimeout(r, 30));
    expect(log.healthy).toBe(false); // a failed write: retried with backoff, calls denied meanwhile
    expect(log.problem).not.toMatch(/taken over/); // not given up on a read that failed
    readable = true; // the store answers: record 1 is not there as sealed here, so another writer has the log
    await expect(ack).rejects.toThrow(/taken over by another writer/);
    await real.close();
  });

  describe("a pipelined store (the writer thread's: the next batch sent while one commits)", () => {
    const { privateKey, publicKey } = generateKeyPairSync("ed25519");
    /**
     * A fault injector around a real SQLite store, pipelined as the writer thread is: appends run one after the
     * other in call order, each only where the log ends (`gap` otherwise). `fault(n, commit)` decides the n-th
     * append (0-based): as it is, or failed before its commit, or committed with its acknowledgement lost.
     */
    function pipelined(fault: (n: number) => "ok" | "fail" | "lost-ack") {
      const real = openSqliteStore(":memory:");
      const sent: number[][] = [];
      /** The first record of each batch, in the order their transactions committed. */
      const committed: number[] = [];
      let chain: Promise<unknown> = Promise.resolve();
      const store: AuditStore = {
        ...real,
        pipelined: true,
        append(batch, holder) {
          const n = sent.push(batch.map((r) => r.seq)) - 1;
          const done = chain.then(async () => {
            const how = fault(n);
            if (how === "fail") throw storeError("unavailable", "connection reset (injected)");
            await real.appendRows(batch.map(auditRowOf), holder, batch[0]!.seq - 1);
            committed.push(batch[0]!.seq);
            if (how === "lost-ack") throw storeError("unavailable", "acknowledgement lost (injected)");
          });
          chain = done.catch(() => {});
          return done;
        },
      };
      return { store, real, sent, committed };
    }

    /** Append `n` records, wait for them, close; resolves to whether the log was healthy once they committed. */
    const fill = async (store: AuditStore, n: number, onError?: (e: unknown) => void) => {
      const log = await openAuditLog(store, {
        logId: "p",
        batchSize: 16,
        flushMs: 1,
        checkpoints: { key: privateKey, every: 32, seconds: 0 },
        ...(onError === undefined ? {} : { onError }),
      });
      for (let i = 1; i <= n; i++) log.append(fields(i));
      await log.flush();
      const healthy = log.healthy;
      await log.close();
      return healthy;
    };

    it("sends the next batch before the one ahead of it has committed, and commits every record in order", async () => {
      const { store, real, sent } = pipelined(() => "ok");
      let inFlight = 0;
      let most = 0;
      const counting: AuditStore = {
        ...store,
        append(batch, holder) {
          most = Math.max(most, ++inFlight);
          return store.append(batch, holder).finally(() => inFlight--);
        },
      };
      expect(await fill(counting, 200)).toBe(true);
      expect(most).toBe(2); // pipelined: one committing, one sent behind it
      expect(sent.flat()).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
      expect((await verifyAudit(real, { keys: [publicKey] })).ok).toBe(true);
      await real.close();
    });

    it("never commits a batch sent behind one that failed: it is refused, and both are written again in order", async () => {
      // the 4th append fails (appends are counted as sent: its second sending is another one)
      const { store, real, sent, committed } = pipelined((n) => (n === 3 ? "fail" : "ok"));
      expect(await fill(store, 200)).toBe(true);
      // the failed batch's follower was sent before the failure was known, refused (`gap`), and sent again after it
      const followerSeq = sent[4]![0]!;
      expect(sent.filter((b) => b[0] === followerSeq).length).toBe(2);
      // and at no time was a record committed before the one ahead of it: batches committed in sequence order
      expect(committed).toEqual([...committed].sort((a, b) => a - b));
      expect(new Set(committed).size).toBe(committed.length);
      const rows = await real.rows("p", 1, 1000);
      expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
      expect((await verifyAudit(real, { keys: [publicKey] })).ok).toBe(true);
      await real.close();
    });

    it("tells a batch whose acknowledgement was lost from the commit of the one behind it, and keeps the log", async () => {
      // the 4th append commits and is reported failed; the batch sent behind it commits too
      const { store, real } = pipelined((n) => (n === 3 ? "lost-ack" : "ok"));
      const errors: unknown[] = [];
      expect(await fill(store, 200, (e) => errors.push(e))).toBe(true); // not taken for another writer's records
      expect(errors.map((e) => (e as Error).message)).toEqual(["acknowledgement lost (injected)"]);
      const rows = await real.rows("p", 1, 1000);
      expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
      expect((await verifyAudit(real, { keys: [publicKey] })).ok).toBe(true);
      await real.close();
    });
  });
});
