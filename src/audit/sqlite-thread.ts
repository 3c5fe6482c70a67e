/**
 * SQLite with its writes on a thread of their own (`audit.writer_thread: true`). better-sqlite3 is
 * synchronous: in the request thread, every batch commit — and now and then the WAL's page writes and
 * checkpoints, 10–25 ms on a shared disk (docs/BENCHMARKS.md) — holds up every request waiting for its turn. Here
 * a worker thread opens the same file and commits the batches (`append`) and checkpoints; this thread keeps a
 * connection of its own for the rest (claims, whose takeover test is a function of this process, reads and
 * queries), which WAL lets run beside the writer. The store's guarantees are the same SQLite store's: the worker
 * runs that very code, each batch fenced by the claim in its own transaction.
 *
 * A file only: two connections to `:memory:` would be two databases.
 */
import type { Worker } from "node:worker_threads";
import { OnbehalfError } from "../errors.js";
import type { SealedRecord } from "./record.js";
import { auditRowOf, openSqliteStore } from "./sqlite.js";
import { type AuditStore, type StoredCheckpoint, storeError } from "./store.js";
import { startAuditWorker } from "./workers.js";

/** What the worker answers: a value, or the error thrown there, as plain data. */
type Reply =
  | { readonly id: number; readonly value: unknown }
  | { readonly id: number; readonly error: { code: string; message: string; details: unknown } };

/**
 * Open `path` with writes on a worker thread.
 *
 * @example
 * const store = openThreadedSqliteStore("./onbehalf.db");
 * await store.init();
 */
export function openThreadedSqliteStore(path: string): AuditStore {
  if (path === ":memory:") {
    throw new OnbehalfError(
      "ERR_CONFIG_INVALID",
      "audit.writer_thread needs a SQLite file: an in-memory database cannot be shared with a writer thread",
    );
  }
  const local = openSqliteStore(path);
  let worker: Worker | undefined;
  let nextId = 0;
  const waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  const failAll = (e: unknown) => {
    for (const w of waiting.values()) w.reject(e);
    waiting.clear();
  };
  const start = (): Worker => {
    const w = startAuditWorker("sqlite-writer", { path });
    // Ref'd only while a commit is in flight: a process that ends without closing its governor ends once its
    // records are committed, as it does with commits on its own thread, instead of waiting on an idle thread.
    w.unref();
    w.on("message", (reply: Reply) => {
      const pending = waiting.get(reply.id);
      if (pending === undefined) return;
      waiting.delete(reply.id);
      if (waiting.size === 0) w.unref();
      if ("error" in reply) {
        pending.reject(
          new OnbehalfError(reply.error.code as never, reply.error.message, { details: reply.error.details }),
        );
      } else pending.resolve(reply.value);
    });
    w.on("error", (e) =>
      failAll(storeError("unavailable", `the audit writer thread failed: ${e.message}`, e)),
    );
    w.on("exit", () => {
      if (worker === w) worker = undefined;
      failAll(storeError("unavailable", "the audit writer thread stopped"));
    });
    return w;
  };
  const ask = (method: "appendRows" | "putCheckpoint", args: unknown[]): Promise<unknown> => {
    worker ??= start();
    const id = nextId++;
    const sent = worker;
    return new Promise((resolve, reject) => {
      waiting.set(id, { resolve, reject });
      if (waiting.size === 1) sent.ref();
      sent.postMessage({ id, method, args });
    });
  };
  return {
    ...local,
    init: () => local.init(),
    // Rows of primitives: a structured clone of whole records (their fields, arguments and chain) cost the
    // request thread more than the insert costs the writer (a CPU profile: 7.7% of it in postMessage). The
    // worker commits them in the order sent, each only where the batch before it ended (`gap` otherwise), so
    // the writer may send the next batch while this one commits.
    append: (batch: readonly SealedRecord[], holder: string) =>
      ask("appendRows", [batch.map(auditRowOf), holder, (batch[0]?.seq ?? 1) - 1]) as Promise<void>,
    pipelined: true,
    putCheckpoint: (c: StoredCheckpoint) => ask("putCheckpoint", [c]) as Promise<void>,
    async close() {
      const w = worker;
      worker = undefined;
      if (w !== undefined) {
        await new Promise<void>((resolve) => {
          w.once("exit", () => resolve());
          w.ref(); // waited for: a process with nothing else left would otherwise end before the thread closes
          w.postMessage({ id: -1, method: "close", args: [] });
        });
      }
      await local.close();
    },
  };
}
