/**
 * What the SQL stores (SQLite, PostgreSQL) share: the audit query (filters → a WHERE clause with placeholders
 * in the store's dialect, newest first, keyset pagination by an opaque cursor (time, log, seq)), and the
 * mapping of rows back to records, stored rows and checkpoints.
 */
import { OnbehalfError } from "../errors.js";
import type { AuditRecord } from "./record.js";
import type { AuditQuery, StoredCheckpoint, StoredRow } from "./store.js";

const FILTERS = ["tenant", "user", "tool", "decision", "agent", "call_id", "trace_id"] as const;

/** Every log the store knows of: with records, checkpoints, or a writer (a log wiped of its records still shows). */
export const LOGS =
  "SELECT log FROM audit_records UNION SELECT log FROM audit_checkpoints UNION SELECT log FROM audit_writers ORDER BY log";
export const MAX_LIMIT = 1000;

export interface BuiltQuery {
  /** SELECT record, leaf_hash … with placeholders. */
  readonly sql: string;
  readonly params: unknown[];
  /** Rows asked for; one more is fetched to know whether a next page exists. */
  readonly limit: number;
}

/** The WHERE clauses of `q`'s filters, with their parameters, and what they were made of. */
export interface Where {
  readonly clauses: string[];
  readonly params: unknown[];
  /** Rows asked for (bounded). */
  readonly limit: number;
  /** `since` and `until` as stored times. */
  readonly since?: string;
  readonly until?: string;
  readonly cursor?: { time: string; log: string; seq: number };
}

/**
 * The filters of `q` as WHERE clauses; `placeholder(i)` writes the i-th (1-based) placeholder (`?` or `$i`).
 *
 * @example
 * whereOf({ user: "alice" }, () => "?").clauses; // ["user = ?"]
 */
export function whereOf(q: AuditQuery, placeholder: (i: number) => string): Where {
  const clauses: string[] = [];
  const params: unknown[] = [];
  const p = (value: unknown) => {
    params.push(value);
    return placeholder(params.length);
  };
  for (const f of FILTERS) {
    const v = q[f];
    if (v !== undefined) clauses.push(`${quoteColumn(f)} = ${p(v)}`);
  }
  const since = q.since === undefined ? undefined : isoTime(q.since, "since");
  const until = q.until === undefined ? undefined : isoTime(q.until, "until");
  if (since !== undefined) clauses.push(`time >= ${p(since)}`);
  if (until !== undefined) clauses.push(`time < ${p(until)}`);
  const cursor = q.cursor === undefined ? undefined : decodeCursor(q.cursor);
  if (cursor !== undefined) {
    clauses.push(`(time, log, seq) < (${p(cursor.time)}, ${p(cursor.log)}, ${p(cursor.seq)})`);
  }
  const limit = Math.min(Math.max(1, Math.trunc(q.limit ?? 100)), MAX_LIMIT);
  return {
    clauses,
    params,
    limit,
    ...(since === undefined ? {} : { since }),
    ...(until === undefined ? {} : { until }),
    ...(cursor === undefined ? {} : { cursor }),
  };
}

/**
 * Build the query for `q`; `placeholder(i)` writes the i-th (1-based) placeholder (`?` or `$i`).
 *
 * @example
 * buildQuery({ user: "alice" }, () => "?").sql; // "SELECT … WHERE user = ? ORDER BY time DESC … LIMIT ?"
 */
export function buildQuery(
  q: AuditQuery,
  placeholder: (i: number) => string,
  table = "audit_records",
): BuiltQuery {
  const { clauses, params, limit } = whereOf(q, placeholder);
  params.push(limit + 1);
  const clause = clauses.length > 0 ? `WHERE ${clauses.join(" AND ")} ` : "";
  const sql = `SELECT record, leaf_hash FROM ${table} ${clause}ORDER BY time DESC, log DESC, seq DESC LIMIT ${placeholder(params.length)}`;
  return { sql, params, limit };
}

/** Turn the rows a built query returned into a page. */
export function pageOf(rows: readonly { record: string; leaf_hash: string }[], limit: number) {
  const records = rows.slice(0, limit).map((r) => recordFromRow(r.record, r.leaf_hash));
  const last = records[records.length - 1];
  return { records, next_cursor: rows.length > limit && last !== undefined ? encodeCursor(last) : null };
}

/** A record as stored (canonical JSON) plus its leaf hash. */
export function recordFromRow(canonical: string, leafHash: string): AuditRecord {
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

/** "user" is a reserved word in PostgreSQL. */
function quoteColumn(name: string): string {
  return name === "user" ? `"user"` : name;
}

/** The cursor that continues a query after record `r`. */
export function encodeCursor(r: Pick<AuditRecord, "time" | "log" | "seq">): string {
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
    // fall through to the error below
  }
  throw new OnbehalfError(
    "ERR_INVALID_ARGUMENT",
    "cursor is not one this server issued: pass next_cursor as given",
  );
}

/** An audit_records row as both SQL stores return it. */
export interface RowShape {
  log: string;
  seq: number | string;
  record: string;
  leaf_hash: string;
  time: string;
  tenant: string | null;
  user: string | null;
  tool: string | null;
  decision: string;
  agent: string | null;
  call_id: string;
  trace_id: string | null;
}

/** An audit_checkpoints row. */
export interface CheckpointShape {
  log: string;
  size: number | string;
  root: string;
  note: string;
  time: string;
  subtrees: string;
}

export function storedRow(r: RowShape): StoredRow {
  return {
    log: r.log,
    seq: Number(r.seq),
    canonical: r.record,
    leafHash: r.leaf_hash,
    columns: {
      time: r.time,
      tenant: r.tenant,
      user: r.user,
      tool: r.tool,
      decision: r.decision,
      agent: r.agent,
      call_id: r.call_id,
      trace_id: r.trace_id,
    },
  };
}

export function storedCheckpoint(r: CheckpointShape): StoredCheckpoint {
  return {
    log: r.log,
    size: Number(r.size),
    root: r.root,
    note: r.note,
    time: r.time,
    subtrees: JSON.parse(r.subtrees) as string[],
  };
}
