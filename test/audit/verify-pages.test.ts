/**
 * `audit verify` on worker threads (src/audit/verify-pages.ts, verify-pool.ts): a SQLite log's pages read and
 * checked on workers give the very report the same verification gives on one thread — when a worker cannot read
 * the file, when records are written after the verification read the log's head, when the block index misses a
 * record — and the workers end with the verification. (Tampered logs: the store suite's tampering cases, each
 * verified in pages of 4 both ways.)
 */
import { execFileSync } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Transferable, WorkerOptions } from "node:worker_threads";
import { describe, expect, it, vi } from "vitest";
import { openAuditLog } from "../../src/audit/log.js";
import { openSqliteStore, type SqliteStore } from "../../src/audit/sqlite.js";
import type { AuditStore } from "../../src/audit/store.js";
import { verifyAudit } from "../../src/audit/verify.js";
import { fields } from "./store-suite.js";

/** While set, each page checker is ended right after it is sent its first page. */
const stopCheckers = vi.hoisted(() => ({ on: false }));
vi.mock("node:worker_threads", async (importOriginal) => {
  const real = await importOriginal<typeof import("node:worker_threads")>();
  class Stoppable extends real.Worker {
    private readonly checker: boolean;
    constructor(script: string | URL, options?: WorkerOptions) {
      super(script, options);
      this.checker = String(script).includes("verify-worker");
    }
    override postMessage(value: unknown, transfer?: readonly Transferable[]) {
      super.postMessage(value, transfer);
      if (this.checker && stopCheckers.on) void this.terminate();
    }
  }
  return { ...real, Worker: Stoppable, default: { ...real, Worker: Stoppable } };
});

const { privateKey, publicKey } = generateKeyPairSync("ed25519");
const trusted = { keys: [publicKey] };
const onThisThread = { ...trusted, pageSize: 8, threads: 0 };
const onWorkers = { ...trusted, pageSize: 8, threads: 2 };

/** A SQLite file with a signed log "v" of `n` records, its writer closed. */
async function signedFile(n: number): Promise<{ path: string; store: SqliteStore }> {
  const path = join(mkdtempSync(join(tmpdir(), "onbehalf-verify-pages-")), "audit.db");
  const store = openSqliteStore(path);
  const log = await openAuditLog(store, {
    logId: "v",
    flushMs: 1,
    checkpoints: { key: privateKey, every: 10, seconds: 0 },
  });
  for (let i = 1; i <= n; i++) log.append(fields(i, { trace_id: `run-${i}` }));
  await log.close();
  return { path, store };
}

/** `store` as one other threads cannot open: its pages are read on the verifying thread. */
function withoutFile(store: AuditStore): AuditStore {
  const { file: _file, ...rest } = store;
  return rest;
}

describe("audit verify on worker threads", () => {
  it("reports an intact log as on one thread, every record read once", async () => {
    const { store } = await signedFile(100);
    const report = await verifyAudit(store, onThisThread);
    expect(report.logs[0]).toMatchObject({ records: 100, verifiedSize: 100, finding: null });
    expect(await verifyAudit(store, onWorkers)).toEqual(report);
    const read: number[] = [];
    await verifyAudit(store, { ...onWorkers, onProgress: (done) => read.push(done) });
    expect(read.at(-1)).toBe(100);
    await store.close();
  });

  it("reads here what a worker cannot read, and reports the same", async () => {
    const { store } = await signedFile(100);
    const unreadable: AuditStore = { ...store, file: join(tmpdir(), "onbehalf-no-such-dir", "audit.db") };
    expect(await verifyAudit(unreadable, onWorkers)).toEqual(await verifyAudit(store, onThisThread));
    store.db.prepare("UPDATE audit_records SET decision = 'deny' WHERE seq = 37").run();
    const edited = await verifyAudit(store, onThisThread);
    expect(edited.logs[0]!.finding).toMatchObject({ seq: 37, problem: "edited" });
    expect(await verifyAudit(unreadable, onWorkers)).toEqual(edited);
    expect(await verifyAudit(store, onWorkers)).toEqual(edited);
    await store.close();
  });

  it("carries on here when its page checkers stop, reading and checking what they had", async () => {
    const { path, store } = await signedFile(100);
    const expected = await verifyAudit(store, onThisThread);
    stopCheckers.on = true;
    try {
      expect(await verifyAudit(store, onWorkers)).toEqual(expected); // pages the workers were to read
      const memory = withoutFile(openSqliteStore(path)); // pages read here, sent to be checked
      expect(await verifyAudit(memory, onWorkers)).toEqual(expected);
      await memory.close();
    } finally {
      stopCheckers.on = false;
    }
    await store.close();
  });

  it("finds rows no page reads, and a record no longer stored as text, as on one thread", async () => {
    const { store } = await signedFile(100);
    store.db
      .prepare(
        `INSERT INTO audit_records SELECT log, 8.5, record, leaf_hash, time, tenant, "user", tool, decision, agent,
         call_id, trace_id FROM audit_records WHERE log = 'v' AND seq = 8`,
      )
      .run();
    const between = await verifyAudit(store, onThisThread);
    expect(between.logs[0]!.finding).toMatchObject({ seq: 8.5, problem: "edited" });
    expect(await verifyAudit(store, onWorkers)).toEqual(between);
    store.db.prepare("DELETE FROM audit_records WHERE seq = 8.5").run();
    expect((await verifyAudit(store, onThisThread)).ok).toBe(true);
    // the same bytes as a BLOB: a store's text column holds something else now
    store.db.prepare("UPDATE audit_records SET record = CAST(record AS BLOB) WHERE seq = 37").run();
    const blob = await verifyAudit(store, onThisThread);
    expect(blob.logs[0]!.finding).toMatchObject({
      seq: 37,
      problem: "edited",
      message: expect.stringMatching(/not stored as text/),
    });
    expect(await verifyAudit(store, onWorkers)).toEqual(blob);
    const memory = withoutFile(store); // read here, checked on the workers
    expect(await verifyAudit(memory, onWorkers)).toEqual(blob);
    await store.close();
  });

  it("refuses a number of threads that is not a whole number", async () => {
    const { store } = await signedFile(20);
    for (const threads of [0.5, -1, Number.POSITIVE_INFINITY]) {
      await expect(verifyAudit(store, { ...trusted, threads })).rejects.toMatchObject({
        code: "ERR_INVALID_ARGUMENT",
        message: expect.stringMatching(/threads must be a whole number/),
      });
    }
    await store.close();
  });

  it("covers records written after it read the log's head", async () => {
    const { path, store } = await signedFile(100);
    const log = await openAuditLog(store, {
      logId: "v",
      flushMs: 1,
      checkpoints: { key: privateKey, every: 10, seconds: 0 },
    });
    const reader = openSqliteStore(path);
    // the head as it was before 20 more records: the workers read up to it, the rest is read here
    const behind: AuditStore = { ...reader, head: async () => ({ seq: 60, leafHash: "" }) };
    for (let i = 101; i <= 120; i++) log.append(fields(i));
    await log.close();
    const report = await verifyAudit(behind, onWorkers);
    expect(report.logs[0]).toMatchObject({ records: 120, verifiedSize: 120, finding: null });
    expect(report).toEqual(await verifyAudit(reader, onThisThread));
    await Promise.all([reader.close(), store.close()]);
  });

  it("finds a record the block index stopped listing, as on one thread", async () => {
    const { store } = await signedFile(100);
    store.db.prepare("DELETE FROM audit_keys WHERE key = 'trace:run-42'").run();
    const report = await verifyAudit(store, onThisThread);
    expect(report.logs[0]!.finding).toMatchObject({ seq: 42, problem: "edited" });
    expect(await verifyAudit(store, onWorkers)).toEqual(report);
    await store.close();
  });

  it("ends its workers with the verification: a process that verifies a long log exits", async () => {
    const { path, store } = await signedFile(100);
    await store.close();
    const script = `
      import { createPublicKey } from "node:crypto";
      import { openSqliteStore } from ${JSON.stringify(new URL("../../src/audit/sqlite.ts", import.meta.url).href)};
      import { verifyAudit } from ${JSON.stringify(new URL("../../src/audit/verify.ts", import.meta.url).href)};
      const key = createPublicKey(${JSON.stringify(publicKey.export({ type: "spki", format: "pem" }))});
      const report = await verifyAudit(openSqliteStore(${JSON.stringify(path)}), { keys: [key], pageSize: 8, threads: 2 });
      console.log(report.ok, report.logs[0].records);`;
    const out = execFileSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
      encoding: "utf8",
      timeout: 60_000,
    });
    expect(out.trim()).toBe("true 100");
  });
});
