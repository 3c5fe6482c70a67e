/**
 * Worker threads that check pages of records for `audit verify` while the verifying thread builds the Merkle
 * tree. Parsing each record and hashing its bytes is most of a verification's work, and pages are independent
 * (each is told where the pages before it end, or its first link is checked by the caller), so on a machine with
 * more than one core the checks run side by side (docs/BENCHMARKS.md). A page of a SQLite store is read by the
 * worker itself, so that the verifying thread neither reads nor copies its rows.
 */
import type { Worker } from "node:worker_threads";
import { OnbehalfError } from "../errors.js";
import type { CheckedPage, PageCheck, PageJob } from "./verify-rows.js";
import { startAuditWorker } from "./workers.js";

/** A page read from a SQLite file on a worker: records `from` to `to` of `log`. */
export interface FileJob {
  readonly kind: "read";
  readonly file: string;
  readonly log: string;
  readonly from: number;
  readonly to: number;
}

export type PoolJob = { readonly kind: "check"; readonly page: PageJob } | FileJob;

export interface CheckPool {
  /** How many pages the pool works on at once. */
  readonly size: number;
  /** Check a page read by the caller. */
  check(page: PageJob): Promise<PageCheck>;
  /** Read a page of a SQLite file and check it. */
  read(job: FileJob): Promise<CheckedPage>;
  /** Stop the workers; pages still being checked are refused. */
  close(): Promise<void>;
}

interface Pending {
  readonly resolve: (value: never) => void;
  readonly reject: (e: Error) => void;
}

/**
 * A pool of `threads` page checkers.
 *
 * @example
 * const pool = openCheckPool(2);
 * const { bad } = await pool.check({ log: "main", rows, expected: 1, prevHash: GENESIS_HASH, index: undefined });
 * await pool.close();
 */
export function openCheckPool(threads: number): CheckPool {
  let nextId = 0;
  let closed = false;
  const unavailable = (why: string) => new OnbehalfError("ERR_AUDIT_UNAVAILABLE", `audit verify: ${why}`);
  // a worker that stopped leaves the pool: a page posted to it would never be answered
  const workers: { worker: Worker; pending: Map<number, Pending> }[] = [];
  for (let i = 0; i < threads; i++) {
    const pending = new Map<number, Pending>();
    const worker: Worker = startAuditWorker("verify-worker", null);
    const entry = { worker, pending };
    const fail = (why: string) => {
      const at = workers.indexOf(entry);
      if (at >= 0) workers.splice(at, 1);
      for (const p of pending.values()) p.reject(unavailable(`a page checker stopped: ${why}`));
      pending.clear();
    };
    worker.on("message", (m: { id: number; value?: never; error?: string }) => {
      const p = pending.get(m.id);
      pending.delete(m.id);
      if (m.error === undefined) p?.resolve(m.value as never);
      else p?.reject(unavailable(`a page could not be checked: ${m.error}`));
    });
    worker.on("error", (e) => fail(e.message));
    worker.on("exit", (code) => fail(closed ? "the verification was over" : `it exited with code ${code}`));
    workers.push(entry);
  }
  const run = <T>(job: PoolJob): Promise<T> => {
    if (closed)
      return Promise.reject(new OnbehalfError("ERR_CLOSED", "audit verify: the page checkers are closed"));
    if (workers.length === 0) return Promise.reject(unavailable("every page checker stopped"));
    const least = workers.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
    const id = nextId++;
    return new Promise<T>((resolve, reject) => {
      least.pending.set(id, { resolve: resolve as (value: never) => void, reject });
      least.worker.postMessage({ id, job });
    });
  };
  return {
    size: threads,
    check: (page) => run({ kind: "check", page }),
    read: (job) => run(job),
    async close() {
      closed = true;
      await Promise.all([...workers].map(({ worker }) => worker.terminate()));
    },
  };
}
