/**
 * A page checker of `audit verify` (verify-pool.ts). It checks the pages it is sent (`check`), or reads a page of
 * a SQLite store's log itself, on a read-only connection of its own, and checks it (`read`): then only the page's
 * leaf hashes go back, 32 bytes a record, for the verifying thread's Merkle tree.
 */
import { parentPort } from "node:worker_threads";
import Database from "better-sqlite3";
import type { RowShape } from "./sql.js";
import { storedRow } from "./sql.js";
import { readBlockIndex } from "./sqlite-index.js";
import type { FileJob, PoolJob } from "./verify-pool.js";
import { type CheckedPage, checkedPage, checkPage, firstLink } from "./verify-rows.js";

/** Per file, the statement reading a range of records, on a read-only connection opened once. */
const rangeReaders = new Map<string, Database.Statement>();

/** Records `from` to `to` of a log, straight from the file. */
function rowsOf(file: string, log: string, from: number, to: number): RowShape[] {
  let stmt = rangeReaders.get(file);
  if (stmt === undefined) {
    const db = new Database(file, { readonly: true, fileMustExist: true });
    stmt = db.prepare("SELECT * FROM audit_records WHERE log = ? AND seq BETWEEN ? AND ? ORDER BY seq");
    rangeReaders.set(file, stmt);
  }
  return stmt.all(log, from, to) as RowShape[];
}

function readPage({ file, log, from, to }: FileJob): CheckedPage {
  const rows = rowsOf(file, log, from, to).map(storedRow);
  // read after the rows, as the store's own blockIndex is, so that it covers every one of them
  const index = readBlockIndex(rangeReaders.get(file)!.database, log, from, to);
  return checkedPage(
    rows,
    from,
    firstLink(rows),
    checkPage({ log, rows, expected: from, prevHash: null, index }),
  );
}

parentPort!.on("message", ({ id, job }: { id: number; job: PoolJob }) => {
  try {
    if (job.kind === "check") parentPort!.postMessage({ id, value: checkPage(job.page) });
    else {
      const page = readPage(job);
      parentPort!.postMessage({ id, value: page }, [page.leaves.buffer as ArrayBuffer]);
    }
  } catch (e) {
    parentPort!.postMessage({ id, error: e instanceof Error ? e.message : String(e) });
  }
});
