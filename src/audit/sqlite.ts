/**
 * The embedded audit store: SQLite through better-sqlite3 (WAL). One table; the record's canonical JSON is
 * stored exactly as it was hashed, next to copies of the queried fields (indexed). `audit verify` checks that
 * the copies agree with the hashed record, so an edited index column cannot make a query lie unnoticed.
 * (Generated columns over the JSON were measured: json_extract on every insert cost more than the rest of
 * the insert together.)
 */
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { OnbehalfError } from "../errors.js";
import type { AuditRecord, SealedRecord } from "./record.js";
import type { AuditPage, AuditQuery, AuditStore, LogHead, StoredRow } from "./store.js";

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
  PRIMARY KEY (log, seq)
);
CREATE INDEX IF NOT EXISTS audit_by_time   ON audit_records (time);
CREATE INDEX IF NOT EXISTS audit_by_user   ON audit_records (user, time);
CREATE INDEX IF NOT EXISTS audit_by_tenant ON audit_records (tenant, time);
CREATE INDEX IF NOT EXISTS audit_by_tool   ON audit_records (tool, time);
CREATE INDEX IF NOT EXISTS audit_by_call   ON audit_records (call_id);
`;

const FILTERS = ["tenant", "user", "tool", "decision", "agent", "call_id"] as const;

/**
 * Open (creating if needed) an SQLite audit store. `path` is a file or `:memory:`.
 *
 * @example
 * const store = openSqliteStore("./onbehalf.db"); await store.init();
 */
export function openSqliteStore(path: string): AuditStore & { readonly db: Database.Database } {
  if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
  let db: Database.Database;
  try {
    db = new Database(path);
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = NORMAL");
    db.pragma("busy_timeout = 5000");
  } catch (e) {
    throw new OnbehalfError(
      "ERR_AUDIT_UNAVAILABLE",
      `cannot open the audit database ${path}: ${(e as Error).message}`,
      {
        cause: e,
      },
    );
  }
  db.exec(SCHEMA);
  const insert = db.prepare(
    "INSERT INTO audit_records (log, seq, record, leaf_hash, time, tenant, user, tool, decision, agent, call_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
  );
  const insertBatch = db.transaction((batch: readonly SealedRecord[]) => {
    for (const r of batch) {
      const f = r.fields;
      insert.run(
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
      );
    }
  });
  const headOf = db.prepare(
    "SELECT seq, leaf_hash FROM audit_records WHERE log = ? ORDER BY seq DESC LIMIT 1",
  );
  const rowsOf = db.prepare(
    "SELECT log, seq, record, leaf_hash FROM audit_records WHERE log = ? AND seq >= ? ORDER BY seq LIMIT ?",
  );
  const queries = new Map<string, Database.Statement>();

  return {
    db,
    async init() {},
    async head(log: string): Promise<LogHead | null> {
      const row = headOf.get(log) as { seq: number; leaf_hash: string } | undefined;
      return row === undefined ? null : { seq: row.seq, leafHash: row.leaf_hash };
    },
    async append(batch: readonly SealedRecord[]) {
      try {
        insertBatch(batch);
      } catch (e) {
        throw new OnbehalfError("ERR_AUDIT_UNAVAILABLE", `audit write failed: ${(e as Error).message}`, {
          cause: e,
        });
      }
    },
    async query(q: AuditQuery): Promise<AuditPage> {
      const { sql, params, limit } = buildQuery(q);
      let stmt = queries.get(sql);
      if (stmt === undefined) {
        stmt = db.prepare(sql);
        queries.set(sql, stmt);
      }
      const rows = stmt.all(...params) as { record: string; leaf_hash: string }[];
      const records = rows.slice(0, limit).map((r) => parseRow(r.record, r.leaf_hash));
      const last = records[records.length - 1];
      return {
        records,
        next_cursor: rows.length > limit && last !== undefined ? encodeCursor(last) : null,
      };
    },
    async logs() {
      return (
        db.prepare("SELECT DISTINCT log FROM audit_records ORDER BY log").all() as { log: string }[]
      ).map((r) => r.log);
    },
    async rows(log: string, fromSeq: number, pageSize: number): Promise<StoredRow[]> {
      return (
        rowsOf.all(log, fromSeq, pageSize) as {
          log: string;
          seq: number;
          record: string;
          leaf_hash: string;
        }[]
      ).map((r) => ({ log: r.log, seq: r.seq, canonical: r.record, leafHash: r.leaf_hash }));
    },
    async close() {
      if (db.open) db.close();
    },
  };
}

function buildQuery(q: AuditQuery): { sql: string; params: unknown[]; limit: number } {
  const where: string[] = [];
  const params: unknown[] = [];
  for (const f of FILTERS) {
    const v = q[f];
    if (v !== undefined) {
      where.push(`${f} = ?`);
      params.push(v);
    }
  }
  if (q.since !== undefined) {
    where.push("time >= ?");
    params.push(isoTime(q.since, "since"));
  }
  if (q.until !== undefined) {
    where.push("time < ?");
    params.push(isoTime(q.until, "until"));
  }
  if (q.cursor !== undefined) {
    const c = decodeCursor(q.cursor);
    where.push("(time, log, seq) < (?, ?, ?)");
    params.push(c.time, c.log, c.seq);
  }
  const limit = Math.min(Math.max(1, Math.trunc(q.limit ?? 100)), 1000);
  params.push(limit + 1);
  const sql = `SELECT record, leaf_hash FROM audit_records ${where.length > 0 ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY time DESC, log DESC, seq DESC LIMIT ?`;
  return { sql, params, limit };
}

function parseRow(canonical: string, leafHash: string): AuditRecord {
  return { ...(JSON.parse(canonical) as Omit<AuditRecord, "leaf_hash">), leaf_hash: leafHash };
}

/** Normalize a user-given time to the stored format, or refuse it clearly. */
export function isoTime(value: string, name: string): string {
  const t = new Date(value);
  if (Number.isNaN(t.getTime())) {
    throw new OnbehalfError(
      "ERR_INVALID_ARGUMENT",
      `${name} "${value}" is not a time: use ISO 8601, e.g. 2026-11-28T10:00:00Z`,
    );
  }
  return t.toISOString();
}

function encodeCursor(r: AuditRecord): string {
  return Buffer.from(JSON.stringify([r.time, r.log, r.seq])).toString("base64url");
}

function decodeCursor(cursor: string): { time: string; log: string; seq: number } {
  try {
    const [time, log, seq] = JSON.parse(Buffer.from(cursor, "base64url").toString()) as [
      string,
      string,
      number,
    ];
    if (typeof time === "string" && typeof log === "string" && Number.isInteger(seq))
      return { time, log, seq };
  } catch {
    // fall through
  }
  throw new OnbehalfError(
    "ERR_INVALID_ARGUMENT",
    "cursor is not one this server issued: pass next_cursor as given",
  );
}
