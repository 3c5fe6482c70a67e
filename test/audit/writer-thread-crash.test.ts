/**
 * The writer thread dying mid-pipeline (audit.writer_thread): batches in flight are lost with it, some of them
 * perhaps committed; the writer must start a new thread, write what was not committed, in order, and nothing twice.
 * The real worker is ended (`terminate`) while batches are in flight; `Worker` is wrapped only to find it.
 */
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Worker } from "node:worker_threads";
import { describe, expect, it, vi } from "vitest";
import { openAuditLog } from "../../src/audit/log.js";
import { openSqliteStore } from "../../src/audit/sqlite.js";
import { openThreadedSqliteStore } from "../../src/audit/sqlite-thread.js";
import { verifyAudit } from "../../src/audit/verify.js";
import { fields } from "./store-suite.js";

const started = vi.hoisted(() => [] as { worker: Worker; script: string }[]);
vi.mock("node:worker_threads", async (importOriginal) => {
  const real = await importOriginal<typeof import("node:worker_threads")>();
  class Recorded extends real.Worker {
    constructor(script: string | URL, options?: import("node:worker_threads").WorkerOptions) {
      super(script, options);
      started.push({ worker: this, script: String(script) });
    }
  }
  return { ...real, Worker: Recorded, default: { ...real, Worker: Recorded } };
});

describe("the writer thread ending mid-pipeline", () => {
  it("is started again, and every record is committed once, in order, and verifies", async () => {
    const { privateKey, publicKey } = generateKeyPairSync("ed25519");
    const path = join(mkdtempSync(join(tmpdir(), "onbehalf-writer-crash-")), "audit.db");
    const store = openThreadedSqliteStore(path);
    const errors: string[] = [];
    const log = await openAuditLog(store, {
      logId: "w",
      batchSize: 32,
      flushMs: 1,
      checkpoints: { key: privateKey, every: 256, seconds: 0 },
      onError: (e) => errors.push((e as Error).message),
    });
    const writers = () => started.filter((s) => s.script.includes("sqlite-writer"));
    for (let i = 1; i <= 20_000; i++) log.append(fields(i));
    // end the thread while batches are in flight: some committed, one or two sent behind them
    while (log.committed < 600) await new Promise((r) => setTimeout(r, 1));
    expect(log.committed).toBeLessThan(20_000);
    await writers()[0]!.worker.terminate();
    await log.flush();
    expect(log.healthy).toBe(true);
    await log.close();
    await store.close();
    expect(writers().length).toBe(2); // a new thread took over
    expect(errors.some((m) => /writer thread stopped/.test(m))).toBe(true);
    const reopened = openSqliteStore(path);
    const seqs: number[] = [];
    for (let from = 1; ; ) {
      const page = await reopened.rows("w", from, 1_000);
      if (page.length === 0) break;
      seqs.push(...page.map((r) => r.seq));
      from = page[page.length - 1]!.seq + 1;
    }
    expect(seqs).toEqual(Array.from({ length: 20_000 }, (_, i) => i + 1));
    expect((await verifyAudit(reopened, { keys: [publicKey] })).ok).toBe(true);
    await reopened.close();
  });
});
