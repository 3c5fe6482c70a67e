/**
 * The embedded audit store: SQLite through better-sqlite3 (WAL). The record's canonical JSON is stored exactly
 * as it was hashed, next to copies of the queried fields (indexed). `audit verify` checks that the copies
 * agree with the hashed record, so an edited index column cannot make a query lie unnoticed. (Generated
 * columns over the JSON were measured: json_extract on every insert cost more than the rest of the insert.)
 */
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import type { Worker } from "node:worker_threads";
import Database from "better-sqlite3";
import { OnbehalfError } from "../errors.js";
import type { SealedRecord } from "./record.js";
import {
  buildQuery,
  type CheckpointShape,
  LOGS,
  pageOf,
  type RowShape,
  storedCheckpoint,
  storedRow,
} from "./sql.js";
import {
  type AuditRow,
  blockIndexWriter,
  catchUp,
  openBlockIndex,
  queryByBlocks,
  readBlockIndex,
  reindex,
  usesBlockIndex,
} from "./sqlite-index.js";
import {
  type AuditPage,
  type AuditQuery,
  type AuditStore,
  type ClaimOptions,
  type ClaimResult,
  type LogHead,
  type LogHolder,
  type StoredCheckpoint,
  storeError,
  type WriterClaim,
} from "./store.js";
import { startAuditWorker } from "./workers.js";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS audit_records (
  log       TEXT    NOT NULL,
  seq       INTEGER NOT NULL,
  record    TEXT    NOT NULL,
  leaf_hash TEXT    NOT NULL,
  time      TEXT    NOT NULL,
  tenant    TEXT,
  user      TEXT,
  tool      TEXT,
  decision  TEXT    NOT NULL,
  agent     TEXT,
  call_id   TEXT    NOT NULL,
  trace_id  TEXT,
  PRIMARY KEY (log, seq)
);
CREATE INDEX IF NOT EXISTS audit_by_time   ON audit_records (time);
CREATE INDEX IF NOT EXISTS audit_by_call   ON audit_records (call_id);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
  log      TEXT    NOT NULL,
  size     INTEGER NOT NULL,
  root     TEXT    NOT NULL,
  note     TEXT    NOT NULL,
  time     TEXT    NOT NULL,
  subtrees TEXT    NOT NULL,
  PRIMARY KEY (log, size)
);
CREATE TABLE IF NOT EXISTS audit_writers (
  log       TEXT    PRIMARY KEY,
  holder    TEXT    NOT NULL,
  host      TEXT    NOT NULL,
  pid       INTEGER NOT NULL,
  label     TEXT    NOT NULL,
  since     TEXT    NOT NULL,
  heartbeat INTEGER NOT NULL
);
`;

/** better-sqlite3 error codes that mean the store refused a record for its content, not that it is down. */
const REJECTED = new Set(["SQLITE_TOOBIG", "SQLITE_MISMATCH", "SQLITE_CONSTRAINT_NOTNULL"]);

interface WriterRow {
  holder: string;
  host: string;
  pid: number;
  label: string;
  since: string;
  heartbeat: number;
}

export type { AuditRow };

/** The row of a sealed record. */
export function auditRowOf(r: SealedRecord): AuditRow {
  const f = r.fields;
  return [
    r.log,
    r.seq,
    r.canonical,
    r.leafHash,
    f.time,
    f.tenant,
    f.user,
    f.tool,
    f.decision,
    f.agent,
    f.call_id,
    f.trace_id,
  ];
}

/** The SQLite store, which also commits rows made by {@link auditRowOf} (the writer thread's way in). */
export type SqliteStore = AuditStore & {
  readonly db: Database.Database;
  /** `after`, when given: the sequence number the log must end at, else nothing commits (`gap`, `conflict`). */
  appendRows(rows: readonly AuditRow[], holder: string, after?: number): Promise<void>;
};

/**
 * Open (creating if needed) an SQLite audit store. `path` is a file or `:memory:`.
 *
 * @example
 * const store = openSqliteStore("./onbehalf.db"); await store.init();
 */
export function openSqliteStore(path: string): SqliteStore {
  let db: Database.Database;
  try {
    if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
    db = new Database(path);
    db.pragma("journal_mode = WAL");
    // NORMAL in WAL mode: a committed batch survives a crash of the process (kill -9 included); a power loss
    // may roll back the last batches but never corrupts the file.
    db.pragma("synchronous = NORMAL");
    // Short: better-sqlite3 waits for a lock synchronously, blocking every request of this process. A store
    // that another process keeps locked is retried by the writer (asynchronously) instead.
    db.pragma("busy_timeout = 50");
    // Fewer, larger WAL checkpoints and a 16 MiB page cache: measured +10–20% sustained appends. Once the
    // store has written a few thousand records, a checkpointer thread does their copying ahead (below).
    db.pragma("wal_autocheckpoint = 4000");
    db.pragma("cache_size = -16384");
    db.exec(SCHEMA);
    addTraceColumn(db);
    openBlockIndex(db);
  } catch (e) {
    throw new OnbehalfError(
      "ERR_AUDIT_UNAVAILABLE",
      `cannot open the audit database ${path}: ${(e as Error).message}`,
      {
        cause: e,
      },
    );
  }
  const insert = db.prepare(
    "INSERT INTO audit_records (log, seq, record, leaf_hash, time, tenant, user, tool, decision, agent, call_id, trace_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
  );
  const renewStmt = db.prepare("UPDATE audit_writers SET heartbeat = ? WHERE log = ? AND holder = ?");
  const lastSeqOf = db.prepare("SELECT max(seq) FROM audit_records WHERE log = ?").pluck();
  const writerOf = db.prepare("SELECT * FROM audit_writers WHERE log = ?");
  const takeStmt = db.prepare(
    "INSERT OR REPLACE INTO audit_writers (log, holder, host, pid, label, since, heartbeat) VALUES (?, ?, ?, ?, ?, ?, ?)",
  );
  const releaseStmt = db.prepare("DELETE FROM audit_writers WHERE log = ? AND holder = ?");
  const checkpoints = checkpointer(path);
  const index = blockIndexWriter(db);
  const insertBatch = db.transaction((rows: readonly AuditRow[], holder: string, after?: number) => {
    const log = rows[0]?.[0];
    if (log === undefined) return undefined;
    // Fenced: the batch commits only while this writer holds the log (the update and the inserts are one
    // transaction, so a writer that lost its claim cannot slip a batch in).
    if (renewStmt.run(Date.now(), log, holder).changes !== 1) {
      throw storeError(
        "conflict",
        `this writer no longer holds audit log ${log}: another writer took it over`,
      );
    }
    if (after !== undefined) {
      // In order: a batch sent behind one that failed (the writer thread's pipeline) must not commit before it.
      const last = (lastSeqOf.get(log) as number | undefined) ?? 0;
      if (last !== after) {
        throw storeError(
          last > after ? "conflict" : "gap",
          `audit log ${log} ends at record ${last}, not ${after}: this batch ${last > after ? "was written already" : "follows one that was not"}`,
        );
      }
    }
    for (const row of rows) insert.run(row);
    const staged = index.write(rows);
    checkpoints.wrote(rows.length);
    return staged;
  });
  const appendRows = (rows: readonly AuditRow[], holder: string, after?: number) =>
    guard("write", () => index.commit(insertBatch.immediate(rows, holder, after)));
  const prepared = (sql: string): Database.Statement => {
    let stmt = queries.get(sql);
    if (stmt === undefined) {
      stmt = db.prepare(sql);
      queries.set(sql, stmt);
    }
    return stmt;
  };
  const headOf = db.prepare(
    "SELECT seq, leaf_hash FROM audit_records WHERE log = ? ORDER BY seq DESC LIMIT 1",
  );
  const rowsOf = db.prepare("SELECT * FROM audit_records WHERE log = ? AND seq >= ? ORDER BY seq LIMIT ?");
  const leavesOf = db
    .prepare("SELECT leaf_hash FROM audit_records WHERE log = ? AND seq BETWEEN ? AND ? ORDER BY seq")
    .pluck();
  // in the primary key's order, so no sort: one pass over the log's rows up to toSeq
  const strayOf = db.prepare(
    `SELECT seq, count(*) AS rows FROM audit_records WHERE log = ? AND seq <= ? GROUP BY seq
     HAVING rows > 1 OR seq < 1 OR typeof(seq) <> 'integer' ORDER BY seq LIMIT 1`,
  );
  const putCheckpoint = db.prepare(
    "INSERT OR REPLACE INTO audit_checkpoints (log, size, root, note, time, subtrees) VALUES (?, ?, ?, ?, ?, ?)",
  );
  const checkpointsOf = db.prepare("SELECT * FROM audit_checkpoints WHERE log = ? ORDER BY size");
  const latestOf = db.prepare("SELECT * FROM audit_checkpoints WHERE log = ? ORDER BY size DESC LIMIT 1");
  const queries = new Map<string, Database.Statement>();
  const holderOfRow = (row: WriterRow, now: number): LogHolder => ({
    holder: row.holder,
    host: row.host,
    pid: row.pid,
    label: row.label,
    since: row.since,
    idleMs: Math.max(0, now - row.heartbeat),
  });
  const claimTx = db.transaction((log: string, claim: WriterClaim, options: ClaimOptions): ClaimResult => {
    const now = Date.now();
    const row = writerOf.get(log) as WriterRow | undefined;
    const holder = row === undefined ? null : holderOfRow(row, now);
    if (holder !== null && holder.holder !== claim.holder) {
      if (holder.idleMs < options.staleMs && !options.gone(holder)) return { refused: holder };
    }
    const since = row?.holder === claim.holder ? row.since : new Date(now).toISOString();
    takeStmt.run(log, claim.holder, claim.host, claim.pid, claim.label, since, now);
    catchUp(db, log); // what a writer without the block index added since this store opened
    return { previous: holder !== null && holder.holder !== claim.holder ? holder : null };
  });
  const guard = <T>(what: string, f: () => T): Promise<T> => {
    try {
      return Promise.resolve(f());
    } catch (e) {
      // Our own errors (a bad cursor or time in a query) say what is wrong already; database errors do not.
      if (e instanceof OnbehalfError) return Promise.reject(e);
      const code = (e as { code?: unknown }).code;
      const failure =
        code === "SQLITE_CONSTRAINT_PRIMARYKEY"
          ? "conflict"
          : typeof code === "string" && REJECTED.has(code)
            ? "rejected"
            : typeof code === "string" && (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED"))
              ? "busy"
              : "unavailable";
      return Promise.reject(storeError(failure, `audit ${what} failed: ${(e as Error).message}`, e));
    }
  };

  return {
    db,
    async init() {
      guard("setup", () => addTraceColumn(db));
    },
    head: (log) =>
      guard("read", () => {
        const row = headOf.get(log) as { seq: number; leaf_hash: string } | undefined;
        return row === undefined ? null : ({ seq: row.seq, leafHash: row.leaf_hash } satisfies LogHead);
      }),
    // IMMEDIATE: take the write lock first, so two processes claiming at once serialize instead of failing.
    claim: (log, claim, options) => guard("claim", () => claimTx.immediate(log, claim, options)),
    writer: (log) =>
      guard("read", () => {
        const row = writerOf.get(log) as WriterRow | undefined;
        return row === undefined ? null : holderOfRow(row, Date.now());
      }),
    renew: (log, holder) => guard("renew", () => renewStmt.run(Date.now(), log, holder).changes === 1),
    release: (log, holder) =>
      guard("release", () => {
        releaseStmt.run(log, holder);
      }),
    append: (batch, holder) => appendRows(batch.map(auditRowOf), holder),
    appendRows,
    query: (q: AuditQuery): Promise<AuditPage> =>
      guard("query", () => {
        if (usesBlockIndex(q)) {
          const { rows, limit } = queryByBlocks(q, prepared);
          return pageOf(rows, limit);
        }
        const { sql, params, limit } = buildQuery(q, () => "?");
        return pageOf(prepared(sql).all(...params) as { record: string; leaf_hash: string }[], limit);
      }),
    blockIndex: (log, fromSeq, toSeq) => guard("read", () => readBlockIndex(db, log, fromSeq, toSeq)),
    ...(path === ":memory:" ? {} : { file: path }),
    logs: () => guard("read", () => (db.prepare(LOGS).all() as { log: string }[]).map((r) => r.log)),
    rows: (log, fromSeq, pageSize) =>
      guard("read", () => (rowsOf.all(log, fromSeq, pageSize) as RowShape[]).map(storedRow)),
    leafHashes: (log, fromSeq, toSeq) => guard("read", () => leavesOf.all(log, fromSeq, toSeq) as string[]),
    strayRow: (log, toSeq) =>
      guard("read", () => {
        const row = strayOf.get(log, toSeq) as { seq: unknown; rows: number } | undefined;
        return row === undefined ? null : { seq: Number(row.seq), rows: row.rows };
      }),
    putCheckpoint: (c: StoredCheckpoint) =>
      guard("write", () => {
        putCheckpoint.run(c.log, c.size, c.root, c.note, c.time, JSON.stringify(c.subtrees));
      }),
    checkpoints: (log) =>
      guard("read", () => (checkpointsOf.all(log) as CheckpointShape[]).map(storedCheckpoint)),
    latestCheckpoint: (log) =>
      guard("read", () => {
        const row = latestOf.get(log) as CheckpointShape | undefined;
        return row === undefined ? null : storedCheckpoint(row);
      }),
    async close() {
      await checkpoints.close();
      if (db.open) db.close();
    },
  };
}

/** Records a store writes before a checkpointer thread starts. */
const CHECKPOINTER_AFTER = 2_000;
/** How often the checkpointer copies the WAL into the database. */
const CHECKPOINT_EVERY_MS = 200;

/**
 * Checkpoints copied off the committing thread. A WAL checkpoint that the writing connection runs itself (every
 * 4,000 pages) copies up to 16 MiB and syncs inside a commit: measured at 1,000 checks/s, p99 19–20 ms with it
 * and 8–10 ms without. After {@link CHECKPOINTER_AFTER} records (a store that only reads, or a test's, never
 * starts one), a worker thread checkpoints every {@link CHECKPOINT_EVERY_MS} (`PASSIVE`: it never blocks the
 * writer), so the writer's own checkpoints find the pages copied already and only end the WAL; they stay, so
 * the WAL cannot grow while writes never pause (a passive checkpoint cannot restart it then). In-memory
 * databases have no WAL.
 */
function checkpointer(path: string) {
  let written = 0;
  let worker: Worker | undefined;
  return {
    wrote(records: number) {
      written += records;
      if (worker !== undefined || written < CHECKPOINTER_AFTER || path === ":memory:") return;
      worker = startAuditWorker("sqlite-checkpointer", { path, everyMs: CHECKPOINT_EVERY_MS });
      worker.unref();
      worker.on("error", () => {}); // the writer's own checkpoints go on either way
    },
    async close() {
      const w = worker;
      worker = undefined;
      if (w === undefined) return;
      const exited = new Promise<void>((resolve) => w.once("exit", () => resolve()));
      w.ref(); // unref'd while it runs; waited for now, or a process with nothing else left would end first
      w.postMessage("close");
      await exited;
    },
  };
}

/**
 * Stores made before records were found by trace get the `trace_id` column, filled from the records (once, in
 * one transaction), and its keys in the block index (when the store has one already; otherwise building it
 * indexes every column).
 */
function addTraceColumn(db: Database.Database): void {
  db.transaction(() => {
    const columns = db.prepare("PRAGMA table_info(audit_records)").all() as { name: string }[];
    if (columns.some((c) => c.name === "trace_id")) return;
    db.exec("ALTER TABLE audit_records ADD COLUMN trace_id TEXT");
    db.exec("UPDATE audit_records SET trace_id = json_extract(record, '$.trace_id')");
    const indexed = db
      .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_keys'")
      .get();
    if (indexed !== undefined) reindex(db, null, 0);
  }).immediate();
}
