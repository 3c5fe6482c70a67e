/**
 * The writer thread dying mid-pipeline (audit.writer_thread): batches in flight are lost with it, some of them
 * perhaps committed; the writer must start a new thread, write what was not committed, in order, and nothing twice.
 * The real worker is ended (`terminate`) right after a batch is sent to it, so that batches are in flight; `Worker`
 * is wrapped only to find it and to end it at that moment.
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
/** The writer thread is ended right after the `after`-th batch is sent to it. */
const kill = vi.hoisted(() => ({ after: Number.POSITIVE_INFINITY, sent: 0 }));
vi.mock("node:worker_threads", async (importOriginal) => {
  const real = await importOriginal<typeof import("node:worker_threads")>();
  class Recorded extends real.Worker {
    constructor(script: string | URL, options?: import("node:worker_threads").WorkerOptions) {
      super(script, options);
      started.push({ worker: this, script: String(script) });
    }
    override postMessage(value: unknown, transfer?: readonly import("node:worker_threads").Transferable[]) {
      super.postMessage(value, transfer);
      if ((value as { method?: unknown }).method === "appendRows" && ++kill.sent === kill.after) {
        void this.terminate();
      }
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
    // end the thread just after its 20th batch is sent: some committed, one or two in flight
    kill.after = 20;
    for (let i = 1; i <= 20_000; i++) log.append(fields(i));
    await log.flush();
    expect(kill.sent).toBeGreaterThan(20);
    expect(log.healthy).toBe(true);
    await log.close();
    await store.close();
    expect(writers().length).toBe(2); // a new thread took over
    // The batches in flight fail with the thread's stop (unless the thread answered them before it ended).
    expect(errors.every((m) => /the audit writer thread stopped/.test(m))).toBe(true);
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
