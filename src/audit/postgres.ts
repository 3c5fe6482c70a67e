/**
 * The audit store for several instances: PostgreSQL through `pg`. A small batch is one INSERT from a JSON array
 * of rows (one round trip, one transaction); a large one is a `COPY` in a transaction that renews the claim
 * first (three round trips, but the database takes text rows ~1.6× as fast as it parses the JSON array).
 * Records are stored as text, exactly the canonical bytes that were hashed (jsonb would re-serialize them).
 * Every instance writes its own log, so instances never contend for a sequence; queries and verification read
 * all logs.
 *
 * `postgres://user@host:5432/db?schema=audit` keeps the tables in the named schema (created if missing).
 */
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import pg from "pg";
import { from as copyFrom } from "pg-copy-streams";
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
  type AuditStore,
  type LogHead,
  type LogHolder,
  type StoredCheckpoint,
  type StoreFailure,
  storeError,
} from "./store.js";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS audit_records (
  log       text   NOT NULL,
  seq       bigint NOT NULL,
  record    text   NOT NULL,
  leaf_hash text   NOT NULL,
  time      text   NOT NULL,
  tenant    text,
  "user"    text,
  tool      text,
  decision  text   NOT NULL,
  agent     text,
  call_id   text   NOT NULL,
  trace_id  text,
  PRIMARY KEY (log, seq)
);
CREATE INDEX IF NOT EXISTS audit_by_time   ON audit_records (time);
CREATE INDEX IF NOT EXISTS audit_by_user   ON audit_records ("user", time);
CREATE INDEX IF NOT EXISTS audit_by_tenant ON audit_records (tenant, time);
CREATE INDEX IF NOT EXISTS audit_by_tool   ON audit_records (tool, time);
CREATE INDEX IF NOT EXISTS audit_by_call   ON audit_records (call_id);
-- stores made before records were found by trace: the column, filled from the records once
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = 'audit_records' AND column_name = 'trace_id') THEN
    ALTER TABLE audit_records ADD COLUMN trace_id text;
    UPDATE audit_records SET trace_id = record::json->>'trace_id';
  END IF;
END $$;
CREATE INDEX IF NOT EXISTS audit_by_trace  ON audit_records (trace_id);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
  log      text   NOT NULL,
  size     bigint NOT NULL,
  root     text   NOT NULL,
  note     text   NOT NULL,
  time     text   NOT NULL,
  subtrees text   NOT NULL,
  PRIMARY KEY (log, size)
);
CREATE TABLE IF NOT EXISTS audit_writers (
  log       text        PRIMARY KEY,
  holder    text        NOT NULL,
  host      text        NOT NULL,
  pid       integer     NOT NULL,
  label     text        NOT NULL,
  since     timestamptz NOT NULL DEFAULT now(),
  heartbeat timestamptz NOT NULL DEFAULT now()
);
`;

/**
 * Fenced: the rows are inserted only while $2 (the log) is held by $3 (this writer), in the same statement
 * that renews the claim. A writer that lost its claim inserts nothing (and learns it from the row count).
 */
const INSERT = `WITH lease AS (
  UPDATE audit_writers SET heartbeat = now() WHERE log = $2 AND holder = $3 RETURNING 1
)
INSERT INTO audit_records (log, seq, record, leaf_hash, time, tenant, "user", tool, decision, agent, call_id, trace_id)
SELECT r.* FROM json_to_recordset($1::json) AS r(log text, seq bigint, record text, leaf_hash text, time text,
  tenant text, "user" text, tool text, decision text, agent text, call_id text, trace_id text)
WHERE EXISTS (SELECT 1 FROM lease)`;

/**
 * Batches of at least this many records are written with COPY (measured on the bench machine: 24,000–25,000 rows
 * a second in batches of 500, against 13,000–15,000 with the INSERT); smaller ones, where one round trip is
 * what counts (an isolated call waiting for its record), with the INSERT.
 */
const COPY_FROM = 64;
const COPY = `COPY audit_records (log, seq, record, leaf_hash, time, tenant, "user", tool, decision, agent, call_id, trace_id) FROM STDIN`;

const WRITER = `SELECT holder, host, pid, label, since,
  (extract(epoch from (now() - heartbeat)) * 1000)::bigint AS idle_ms FROM audit_writers WHERE log = $1`;

const QUERY_TIMEOUT_MS = 5_000;

/** SQLSTATE classes that mean the content was refused: 22 data exception, 54 program limit exceeded. */
const REJECTED_CLASSES = ["22", "54"];
/** SQLSTATEs that mean the store is there but cannot take writes now (read-only, disk full, shutting down). */
function failureOfPg(e: unknown): StoreFailure {
  const code = (e as { code?: unknown }).code;
  if (typeof code !== "string" || code.length !== 5) return "unavailable";
  if (code === "23505") return "conflict"; // unique violation: another writer wrote this sequence number
  return REJECTED_CLASSES.includes(code.slice(0, 2)) ? "rejected" : "unavailable";
}

/**
 * Open a PostgreSQL audit store.
 *
 * @example
 * const store = openPostgresStore("postgres://onbehalf@db.internal/audit"); await store.init();
 */
export function openPostgresStore(url: string): AuditStore & { readonly pool: pg.Pool } {
  const { connectionString, schema } = parseUrl(url);
  const pool = new pg.Pool({
    connectionString,
    max: 4,
    connectionTimeoutMillis: 3_000,
    // A database that stops answering must become a failure (calls fail closed), not a write that hangs.
    query_timeout: QUERY_TIMEOUT_MS,
    ...(schema === undefined ? {} : { options: `-c search_path=${schema}` }),
  });
  // An idle client that loses its connection must not crash the process; the next query reconnects.
  pool.on("error", () => {});
  const run = async <T>(what: string, f: () => Promise<T>): Promise<T> => {
    try {
      return await f();
    } catch (e) {
      if (e instanceof OnbehalfError) throw e;
      throw storeError(failureOfPg(e), `audit ${what} failed (PostgreSQL): ${(e as Error).message}`, e);
    }
  };
  const holderOf = async (log: string): Promise<LogHolder | null> => {
    const [row] = await rows<{
      holder: string;
      host: string;
      pid: number;
      label: string;
      since: Date;
      idle_ms: string;
    }>(WRITER, [log]);
    return row === undefined
      ? null
      : { ...row, since: row.since.toISOString(), idleMs: Math.max(0, Number(row.idle_ms)) };
  };
  const rows = async <R>(sql: string, params: unknown[]): Promise<R[]> =>
    (await pool.query(sql, params)).rows as R[];

  return {
    pool,
    init: () =>
      run("setup", async () => {
        // Instances starting together on a fresh database would race on CREATE … IF NOT EXISTS (which is not
        // atomic in PostgreSQL): one transaction at a time, under an advisory lock.
        const client = await pool.connect();
        try {
          await client.query("BEGIN");
          await client.query("SELECT pg_advisory_xact_lock(hashtext($1))", [
            `onbehalf-audit:${schema ?? ""}`,
          ]);
          if (schema !== undefined) await client.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
          await client.query(SCHEMA);
          await client.query("COMMIT");
        } catch (e) {
          await client.query("ROLLBACK").catch(() => {});
          throw e;
        } finally {
          client.release();
        }
      }),
    head: (log) =>
      run("read", async () => {
        const [row] = await rows<{ seq: string; leaf_hash: string }>(
          "SELECT seq, leaf_hash FROM audit_records WHERE log = $1 ORDER BY seq DESC LIMIT 1",
          [log],
        );
        return row === undefined
          ? null
          : ({ seq: Number(row.seq), leafHash: row.leaf_hash } satisfies LogHead);
      }),
    claim: (log, claim, options) =>
      run("claim", async () => {
        // Compare-and-set on the holder seen, so two writers claiming at once cannot both win.
        for (let attempt = 0; attempt < 5; attempt++) {
          const current = await holderOf(log);
          if (current === null) {
            const inserted = await pool.query(
              "INSERT INTO audit_writers (log, holder, host, pid, label) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (log) DO NOTHING",
              [log, claim.holder, claim.host, claim.pid, claim.label],
            );
            if (inserted.rowCount === 1) return { previous: null };
            continue;
          }
          const mine = current.holder === claim.holder;
          if (!mine && current.idleMs < options.staleMs && !options.gone(current))
            return { refused: current };
          const taken = await pool.query(
            `UPDATE audit_writers SET holder = $2, host = $3, pid = $4, label = $5, heartbeat = now(),
               since = CASE WHEN holder = $2 THEN since ELSE now() END
             WHERE log = $1 AND holder = $6`,
            [log, claim.holder, claim.host, claim.pid, claim.label, current.holder],
          );
          if (taken.rowCount === 1) return { previous: mine ? null : current };
        }
        throw storeError("unavailable", `audit log ${log}: its claim kept changing hands; try again`);
      }),
    writer: (log) => run("read", () => holderOf(log)),
    renew: (log, holder) =>
      run("renew", async () => {
        const r = await pool.query(
          "UPDATE audit_writers SET heartbeat = now() WHERE log = $1 AND holder = $2",
          [log, holder],
        );
        return r.rowCount === 1;
      }),
    release: (log, holder) =>
      run("release", async () => {
        await pool.query("DELETE FROM audit_writers WHERE log = $1 AND holder = $2", [log, holder]);
      }),
    append: (batch, holder) =>
      run("write", async () => {
        const log = batch[0]?.log;
        if (log === undefined) return;
        if (batch.length >= COPY_FROM) return copyBatch(pool, batch, log, holder);
        const r = await pool.query(INSERT, [rowsJson(batch), log, holder]);
        if (r.rowCount !== batch.length) throw lostClaim(log);
      }),
    query: (q) =>
      run("query", async () => {
        const { sql, params, limit } = buildQuery(q, (i) => `$${i}`);
        return pageOf(await rows<{ record: string; leaf_hash: string }>(sql, params), limit);
      }),
    logs: () => run("read", async () => (await rows<{ log: string }>(LOGS, [])).map((r) => r.log)),
    rows: (log, fromSeq, pageSize) =>
      run("read", async () =>
        (
          await rows<RowShape>(
            "SELECT * FROM audit_records WHERE log = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
            [log, fromSeq, pageSize],
          )
        ).map(storedRow),
      ),
    strayRow: (log, toSeq) =>
      run("read", async () => {
        const [row] = await rows<{ seq: string; rows: string }>(
          `SELECT seq, count(*) AS rows FROM audit_records WHERE log = $1 AND seq <= $2 GROUP BY seq
           HAVING count(*) > 1 OR seq < 1 ORDER BY seq LIMIT 1`,
          [log, toSeq],
        );
        return row === undefined ? null : { seq: Number(row.seq), rows: Number(row.rows) };
      }),
    leafHashes: (log, fromSeq, toSeq) =>
      run("read", async () =>
        (
          await rows<{ leaf_hash: string }>(
            "SELECT leaf_hash FROM audit_records WHERE log = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq",
            [log, fromSeq, toSeq],
          )
        ).map((r) => r.leaf_hash),
      ),
    putCheckpoint: (c: StoredCheckpoint) =>
      run("write", async () => {
        await pool.query(
          `INSERT INTO audit_checkpoints (log, size, root, note, time, subtrees) VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (log, size) DO UPDATE SET root = $3, note = $4, time = $5, subtrees = $6`,
          [c.log, c.size, c.root, c.note, c.time, JSON.stringify(c.subtrees)],
        );
      }),
    checkpoints: (log) =>
      run("read", async () =>
        (
          await rows<CheckpointShape>("SELECT * FROM audit_checkpoints WHERE log = $1 ORDER BY size", [log])
        ).map(storedCheckpoint),
      ),
    latestCheckpoint: (log) =>
      run("read", async () => {
        const [row] = await rows<CheckpointShape>(
          "SELECT * FROM audit_checkpoints WHERE log = $1 ORDER BY size DESC LIMIT 1",
          [log],
        );
        return row === undefined ? null : storedCheckpoint(row);
      }),
    close: () => pool.end(),
  };
}

function lostClaim(log: string): OnbehalfError {
  return storeError("conflict", `this writer no longer holds audit log ${log}: another writer took it over`);
}

/**
 * One batch by COPY, fenced as the INSERT is: the claim is renewed first in the same transaction (its row lock
 * holds off a takeover until the commit), and nothing commits if it is no longer held. Within the pool's
 * query timeout, or the connection is closed and the write fails (a database that stops answering is a
 * failure, not a wait). A connection that broke, or that was not cleanly rolled back, is not reused.
 */
async function copyBatch(
  pool: pg.Pool,
  batch: readonly SealedRecord[],
  log: string,
  holder: string,
): Promise<void> {
  const client = await pool.connect();
  // Checked out, a client has no listener for its connection's errors (the pool's is removed): without one, a
  // database that goes away mid-COPY would throw from an 'error' event and end the process.
  let broken = false;
  const onError = () => {
    broken = true;
  };
  client.on("error", onError);
  let late = false;
  const timer = setTimeout(() => {
    late = true;
    client.end().catch(() => {});
  }, QUERY_TIMEOUT_MS);
  try {
    const [, lease] = (await client.query(
      `BEGIN; UPDATE audit_writers SET heartbeat = now() WHERE log = ${client.escapeLiteral(log)} AND holder = ${client.escapeLiteral(holder)}`,
    )) as unknown as pg.QueryResult[];
    if (lease?.rowCount !== 1) throw lostClaim(log);
    await pipeline(Readable.from([copyText(batch)]), client.query(copyFrom(COPY)));
    await client.query("COMMIT");
  } catch (e) {
    const timedOut = late; // as the error came, not after the rollback below
    if (!timedOut && !broken) {
      await client.query("ROLLBACK").then(
        () => {},
        () => {
          broken = true;
        },
      );
    } else broken = true;
    if (timedOut) {
      throw storeError("unavailable", `PostgreSQL did not answer within ${QUERY_TIMEOUT_MS / 1000} s`, e);
    }
    throw e;
  } finally {
    clearTimeout(timer);
    client.removeListener("error", onError);
    client.release(broken);
  }
}

/** COPY's text format: a line per record, tab-separated, `\N` for null, backslash escapes. */
function copyText(batch: readonly SealedRecord[]): string {
  let text = "";
  for (const r of batch) {
    const f = r.fields;
    text += `${copyField(r.log)}\t${r.seq}\t${copyField(r.canonical)}\t${r.leafHash}\t${copyField(f.time)}\t${copyField(f.tenant)}\t${copyField(f.user)}\t${copyField(f.tool)}\t${copyField(f.decision)}\t${copyField(f.agent)}\t${copyField(f.call_id)}\t${copyField(f.trace_id)}\n`;
  }
  return text;
}

const COPY_ESCAPES: Record<string, string> = { "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t" };

function copyField(value: string | null): string {
  if (value === null) return "\\N";
  return /[\\\n\r\t]/.test(value) ? value.replace(/[\\\n\r\t]/g, (c) => COPY_ESCAPES[c]!) : value;
}

/**
 * The batch as one JSON array of rows (json_to_recordset): V8's JSON.stringify and PostgreSQL's JSON parser
 * beat pg's per-element text-array escaping (measured ~8%).
 */
function rowsJson(batch: readonly SealedRecord[]): string {
  return JSON.stringify(
    batch.map((r) => {
      const f = r.fields;
      return {
        log: r.log,
        seq: r.seq,
        record: r.canonical,
        leaf_hash: r.leafHash,
        time: f.time,
        tenant: f.tenant,
        user: f.user,
        tool: f.tool,
        decision: f.decision,
        agent: f.agent,
        call_id: f.call_id,
        trace_id: f.trace_id,
      };
    }),
  );
}

function parseUrl(url: string): { connectionString: string; schema: string | undefined } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new OnbehalfError("ERR_CONFIG_INVALID", `audit.store "${url}" is not a postgres:// URL`);
  }
  const schema = parsed.searchParams.get("schema") ?? undefined;
  if (schema !== undefined && !/^[a-z_][a-z0-9_]*$/.test(schema)) {
    throw new OnbehalfError(
      "ERR_CONFIG_INVALID",
      `schema "${schema}" must be a plain lower-case SQL identifier`,
    );
  }
  parsed.searchParams.delete("schema");
  return { connectionString: parsed.toString(), schema };
}
