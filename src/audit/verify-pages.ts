/**
 * The pages `audit verify` takes a log in, in order, each checked (verify-rows.ts): read ahead and checked on
 * worker threads once a log proves longer than a page (verify-pool.ts), on this thread otherwise.
 *
 * A SQLite store's pages are read by the workers themselves, by sequence number ranges up to the log's head when
 * the verification began, each before the pages ahead of it are known: such a page is taken only when it starts
 * exactly where the one before it ended and links to its last record, and is sound. Anything else (a record
 * missing or edited, a page a worker could not read) is read and checked again here, the way a log is read
 * without workers, so that what is reported is the same either way. The rest of the log (records written while
 * it was verified, a store other threads cannot open) is read here, page after page, and checked on the workers.
 */

import type { AuditStore } from "./store.js";
import { type CheckPool, openCheckPool } from "./verify-pool.js";
import { type CheckedPage, checkedPage, checkPage } from "./verify-rows.js";

/** Started once per verification, shared by its logs. */
export interface PageCheckers {
  /** Workers the pool starts with (0: none). */
  readonly threads: number;
  /** The pool, started now if it is not yet (null when verifying on this thread only). */
  start(): CheckPool | null;
  /** The pool if it is started. */
  started(): CheckPool | null;
  close(): Promise<void>;
}

/** Checkers with `threads` workers, started only when a log needs them (0: always this thread). */
export function pageCheckers(threads: number): PageCheckers {
  let pool: CheckPool | null = null;
  return {
    threads,
    start: () => {
      if (pool === null && threads > 0) pool = openCheckPool(threads);
      return pool;
    },
    started: () => pool,
    close: async () => pool?.close(),
  };
}

export interface PageFeed {
  /** The next page, starting at record `expected` and linking to `prevHash`; null at the end of the log. */
  next(expected: number, prevHash: string): Promise<CheckedPage | null>;
}

/**
 * The pages of `log`, `pageSize` records each.
 *
 * @example
 * const feed = pagesOf(store, "main", 10_000, pageCheckers(2));
 * for (let page = await feed.next(1, GENESIS_HASH); page !== null; page = await feed.next(…)) …
 */
export async function pagesOf(
  store: AuditStore,
  log: string,
  pageSize: number,
  checkers: PageCheckers,
): Promise<PageFeed> {
  const head = (await store.head(log))?.seq ?? 0;
  const file = head > pageSize && checkers.threads > 0 ? store.file : undefined;
  /** Ranges read by the workers (up to the head), then pages read here. */
  let byRanges = file !== undefined;
  /** The next range a worker reads; null once every range up to the head is asked for. */
  let ranged: number | null = byRanges ? 1 : null;
  /** Where the next page read here starts (after the last page read, which may be ahead of the tree). */
  let readFrom = { seq: 1, hash: "" };
  let exhausted = false;
  /** Pages asked for ahead of the tree, in order. */
  const ahead: Promise<CheckedPage | null>[] = [];
  const depth = (pool: CheckPool | null) => (pool === null ? 1 : 2 * pool.size);

  /** Records `from` to `to` read and checked on a worker; null when no worker could (then they are read here). */
  const readRange = (pool: CheckPool, from: number, to: number): Promise<CheckedPage | null> =>
    pool.read({ kind: "read", file: file!, log, from, to }).catch(() => null);
  /**
   * Read the page from `from` (after `prevHash`) here; checked on a worker when it is full and there are workers.
   * Resolves once it is read, to its check (in a box: a promise would be awaited with it), or null past the end.
   */
  const readHere = async (from: number, prevHash: string) => {
    const rows = await store.rows(log, from, pageSize);
    if (rows.length === 0) return null;
    const first = rows[0]!;
    const last = rows[rows.length - 1]!;
    const index = await store.blockIndex?.(log, first.seq, last.seq);
    readFrom = { seq: last.seq + 1, hash: last.leafHash };
    const job = { log, rows, expected: from, prevHash, index };
    const pool = rows.length === pageSize ? checkers.start() : null;
    if (pool === null) return { page: Promise.resolve(checkedPage(rows, from, prevHash, checkPage(job))) };
    // a page no worker could check (one stopped) is checked here
    const page = pool.check(job).then(
      (c) => checkedPage(rows, from, prevHash, c),
      () => checkedPage(rows, from, prevHash, checkPage(job)),
    );
    return { page };
  };

  return {
    async next(expected, prevHash) {
      if (byRanges) {
        // Ranges read by the workers: taken only sound, and exactly where the tree is.
        const pool = checkers.start()!;
        while (ranged !== null && ahead.length < depth(pool)) {
          const to = Math.min(ranged + pageSize - 1, head);
          ahead.push(readRange(pool, ranged, to));
          ranged = to < head ? to + 1 : null;
        }
        const page = await ahead.shift();
        const taken =
          page !== undefined &&
          page !== null &&
          page.check.bad === null &&
          page.count > 0 &&
          page.firstSeq === expected &&
          page.firstLink === prevHash;
        if (taken) return page;
        // The last range taken, or one that is not: read here from where the tree is, as without workers.
        byRanges = false;
        ranged = null;
        ahead.length = 0;
      }
      // Pages read here: with workers, read ahead while the ones before are checked (each starts where the last
      // one read ended: every page the tree takes before it is sound, or the verification ends).
      if (ahead.length === 0) readFrom = { seq: expected, hash: prevHash };
      while (!exhausted && (ahead.length === 0 || ahead.length < depth(checkers.started()))) {
        const read = await readHere(readFrom.seq, readFrom.hash);
        if (read === null) exhausted = true;
        else ahead.push(read.page);
      }
      return (await ahead.shift()) ?? null;
    },
  };
}
