/**
 * The SQLite store's block index (src/audit/sqlite-index.ts): queries through it answer exactly what the
 * plain SQL query answers, across logs, blocks, equal times and pages; a store made before it gets it when
 * opened; rows an older writer left without it are indexed when the store opens again; and `audit verify`
 * finds an index that no longer lists a record.
 */
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { openAuditLog } from "../../src/audit/log.js";
import type { AuditFields } from "../../src/audit/record.js";
import { buildQuery, pageOf } from "../../src/audit/sql.js";
import { type AuditRow, openSqliteStore, type SqliteStore } from "../../src/audit/sqlite.js";
import { BLOCK_SIZE, KEYS_OF_BLOCKS } from "../../src/audit/sqlite-index.js";
import type { AuditQuery } from "../../src/audit/store.js";
import { verifyAudit } from "../../src/audit/verify.js";
import { fields } from "./store-suite.js";

const holder = { holder: "test:1:x", host: "test", pid: 1, label: "test" };
const { privateKey, publicKey } = generateKeyPairSync("ed25519");
const trusted = { keys: [publicKey] };

function storePath(): string {
  return join(mkdtempSync(join(tmpdir(), "onbehalf-block-index-")), "audit.db");
}

/** A file store at `path` with a genuine, signed log `logId` of 40 records (its writer still open). */
async function signedLog(
  path: string,
  logId: string,
  over: (i: number) => Partial<AuditFields> = () => ({}),
) {
  const store = openSqliteStore(path);
  const log = await openAuditLog(store, {
    logId,
    flushMs: 1,
    checkpoints: { key: privateKey, every: 10, seconds: 0 },
  });
  for (let i = 1; i <= 40; i++) log.append(fields(i, over(i)));
  await log.flush();
  return { store, log };
}
const T0 = Date.UTC(2026, 10, 30, 9, 0, 0);

/** A deterministic generator (mulberry32), so a failing case can be replayed. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const USERS = ["alice", "bob", "carol", "dave", "rare-user", null];
const TENANTS = ["acme", "globex", null];
const TOOLS = ["lookup", "refund", "export", null];

/** Rows of `log`: times that mostly grow, sometimes repeat and sometimes step back; values skewed. */
function rowsOf(log: string, n: number, rand: () => number, offset: number): AuditRow[] {
  const rows: AuditRow[] = [];
  let ms = T0 + offset;
  for (let seq = 1; seq <= n; seq++) {
    const r = rand();
    ms += r < 0.2 ? 0 : r < 0.25 ? -3 : Math.floor(rand() * 4);
    const pick = <T>(xs: readonly T[]) => xs[Math.floor(rand() ** 2 * xs.length)]!;
    const user = seq % 997 === 0 ? "rare-user" : pick(USERS.filter((u) => u !== "rare-user"));
    const time = new Date(ms).toISOString();
    rows.push([
      log,
      seq,
      JSON.stringify({ log, seq, time }),
      seq.toString(16).padStart(64, "0"),
      time,
      pick(TENANTS),
      user,
      pick(TOOLS),
      rand() < 0.1 ? "deny" : "allow",
      rand() < 0.5 ? "planner" : "bot",
      `call-${log}-${seq}`,
      rand() < 0.7 ? null : `trace-${Math.floor(seq / 40)}`,
    ]);
  }
  return rows;
}

async function filledStore(): Promise<SqliteStore> {
  const store = openSqliteStore(storePath());
  await store.init();
  const rand = random(17);
  // Three logs, each past two block boundaries, written in batches of uneven sizes, interleaved in time.
  // Log ids outside ASCII too, one past the BMP: SQLite orders text by its UTF-8 bytes, not by UTF-16 units.
  const logs = ["log-a", "log-\uff01", "log-\u{1f600}"];
  const all = logs.map((log, i) => rowsOf(log, 2 * BLOCK_SIZE + 300, rand, i * 7));
  for (const log of logs) await store.claim(log, { ...holder }, { staleMs: 60_000, gone: () => false });
  const at = [0, 0, 0];
  while (at.some((p, i) => p < all[i]!.length)) {
    const i = Math.floor(rand() * 3);
    const size = 1 + Math.floor(rand() * 300);
    const batch = all[i]!.slice(at[i], at[i]! + size);
    at[i] = at[i]! + batch.length;
    if (batch.length > 0) await store.appendRows(batch, holder.holder);
  }
  return store;
}

/** The answer of the plain SQL query (the time index, every filter in SQL): what the block index must equal. */
function bySql(store: SqliteStore, q: AuditQuery) {
  const { sql, params, limit } = buildQuery(q, () => "?");
  return pageOf(store.db.prepare(sql).all(...params) as { record: string; leaf_hash: string }[], limit);
}

/** Every page of `q`, following cursors, as `log/seq` ids. */
async function allPages(
  page: (cursor?: string) => Promise<{ records: { log: string; seq: number }[]; next_cursor: string | null }>,
) {
  const ids: string[] = [];
  let cursor: string | undefined;
  for (let n = 0; n < 1000; n++) {
    const p = await page(cursor);
    ids.push(...p.records.map((r) => `${r.log}/${r.seq}`));
    if (p.next_cursor === null) return ids;
    cursor = p.next_cursor;
  }
  throw new Error("more than 1000 pages");
}

describe("the SQLite block index", () => {
  it("answers queries by user, tenant, tool and trace exactly as the SQL query does, page by page", async () => {
    const store = await filledStore();
    const rand = random(99);
    const queries: AuditQuery[] = [
      { user: "alice" },
      { user: "rare-user", limit: 3 },
      { user: "nobody" },
      { tenant: "globex", tool: "export", limit: 50 },
      { tool: "refund", decision: "deny", agent: "planner", limit: 7 },
      { trace_id: "trace-30" },
      { user: "bob", since: new Date(T0 + 2_000).toISOString(), until: new Date(T0 + 4_000).toISOString() },
      { tenant: "acme", user: "dave", tool: "lookup", limit: 1000 },
    ];
    for (let i = 0; i < 40; i++) {
      const q: Record<string, unknown> = { limit: 25 + Math.floor(rand() * 100) };
      if (rand() < 0.6) q["user"] = USERS[Math.floor(rand() * 5)];
      if (rand() < 0.4) q["tenant"] = TENANTS[Math.floor(rand() * 2)];
      if (rand() < 0.4 || q["user"] === undefined) q["tool"] = TOOLS[Math.floor(rand() * 3)];
      if (rand() < 0.2) q["decision"] = "deny";
      if (rand() < 0.3) q["since"] = new Date(T0 + Math.floor(rand() * 6_000)).toISOString();
      queries.push(q as AuditQuery);
    }
    let nonEmpty = 0;
    for (const q of queries) {
      const expected = await allPages(async (cursor) =>
        bySql(store, { ...q, ...(cursor === undefined ? {} : { cursor }) }),
      );
      const actual = await allPages((cursor) =>
        store.query({ ...q, ...(cursor === undefined ? {} : { cursor }) }),
      );
      expect(actual, JSON.stringify(q)).toEqual(expected);
      if (expected.length > 0) nonEmpty++;
    }
    expect(nonEmpty).toBeGreaterThan(35);
    await store.close();
  });

  it("pages through records of equal times across logs and blocks in the SQL query's order", async () => {
    const store = openSqliteStore(":memory:");
    const time = new Date(T0).toISOString();
    for (const log of ["p", "q"]) {
      await store.claim(log, holder, { staleMs: 60_000, gone: () => false });
      const rows = rowsOf(log, BLOCK_SIZE + 500, random(3), 0).map(
        (r) =>
          [
            r[0],
            r[1],
            JSON.stringify({ log, seq: r[1], time }),
            r[3],
            time,
            "acme",
            ...r.slice(6),
          ] as unknown as AuditRow,
      );
      await store.appendRows(rows, holder.holder);
    }
    for (const q of [
      { tenant: "acme", limit: 10 },
      { tenant: "acme", limit: 333 },
    ]) {
      const expected = await allPages(async (cursor) =>
        bySql(store, { ...q, ...(cursor === undefined ? {} : { cursor }) }),
      );
      expect(expected).toHaveLength(2 * (BLOCK_SIZE + 500));
      const actual = await allPages((cursor) =>
        store.query({ ...q, ...(cursor === undefined ? {} : { cursor }) }),
      );
      expect(actual).toEqual(expected);
    }
    await store.close();
  });

  it("reads only the blocks it needs for the newest page of a common user", async () => {
    const store = await filledStore();
    const profile = store.db
      .prepare("SELECT count(*) FROM audit_keys WHERE key = 'user:alice'")
      .pluck()
      .get();
    expect(profile).toBe(9); // every block of the three logs holds alice
    let scanned = 0;
    const db = store.db;
    const prepare = db.prepare.bind(db);
    (db as { prepare: typeof db.prepare }).prepare = ((sql: string) => {
      const stmt = prepare(sql);
      if (!sql.startsWith("SELECT record, leaf_hash, time, log, seq")) return stmt;
      const all = stmt.all.bind(stmt);
      (stmt as { all: typeof stmt.all }).all = ((...args: unknown[]) => {
        scanned++;
        return all(...args);
      }) as typeof stmt.all;
      return stmt;
    }) as typeof db.prepare;
    const page = await store.query({ user: "alice", limit: 10 });
    expect(page.records).toHaveLength(10);
    expect(scanned).toBeLessThanOrEqual(3); // the newest block of each log at most, not all nine
    await store.close();
  });

  it("is built for a store made before it, whose per-record indexes it drops", async () => {
    const path = storePath();
    const made = openSqliteStore(path);
    await made.claim("old", holder, { staleMs: 60_000, gone: () => false });
    await made.appendRows(rowsOf("old", 1500, random(5), 0), holder.holder);
    // The store as the version before made it: per-record indexes, no block index.
    made.db.exec(`DROP TABLE audit_keys; DROP TABLE audit_blocks;
      CREATE INDEX audit_by_user ON audit_records (user, time); CREATE INDEX audit_by_tenant ON audit_records (tenant, time);
      CREATE INDEX audit_by_tool ON audit_records (tool, time); CREATE INDEX audit_by_trace ON audit_records (trace_id);`);
    await made.close();
    const store = openSqliteStore(path);
    const indexes = store.db
      .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'audit_by_%'")
      .pluck()
      .all();
    expect(indexes.sort()).toEqual(["audit_by_call", "audit_by_time"]);
    for (const q of [{ user: "alice" }, { tool: "refund", limit: 500 }, { tenant: "globex", user: "bob" }]) {
      expect((await store.query(q)).records.map((r) => r.seq)).toEqual(
        bySql(store, q).records.map((r) => r.seq),
      );
    }
    await store.close();
  });

  it("indexes rows an older writer added without it when the store opens again", async () => {
    const path = storePath();
    const store = openSqliteStore(path);
    await store.claim("mixed", holder, { staleMs: 60_000, gone: () => false });
    const rows = rowsOf("mixed", 2600, random(8), 0);
    await store.appendRows(rows.slice(0, 1000), holder.holder);
    // An older onbehalf on the same file: plain inserts, past the next block boundary, no index rows.
    const insert = store.db.prepare(`INSERT INTO audit_records VALUES (${Array(12).fill("?").join(", ")})`);
    for (const row of rows.slice(1000)) insert.run(row);
    const q = { user: "rare-user" };
    expect(bySql(store, q).records.map((r) => r.seq)).toEqual([1994, 997]);
    expect((await store.query(q)).records.map((r) => r.seq)).toEqual([997]); // unindexed: not found yet
    await store.close();
    const again = openSqliteStore(path);
    expect((await again.query(q)).records.map((r) => r.seq)).toEqual([1994, 997]);
    await again.close();
  });

  it("indexes them when a writer claims the log again, before it writes further blocks", async () => {
    const path = storePath();
    const store = openSqliteStore(path);
    await store.claim("mixed", holder, { staleMs: 60_000, gone: () => false });
    const rows = rowsOf("mixed", 4200, random(8), 0);
    await store.appendRows(rows.slice(0, 1000), holder.holder);
    // An older onbehalf took the log over (its claim, its plain inserts across two block boundaries)…
    const older = { holder: "old:2:y", host: "test", pid: 2, label: "onbehalf 0.0" };
    await store.claim("mixed", older, { staleMs: 0, gone: () => true });
    const insert = store.db.prepare(`INSERT INTO audit_records VALUES (${Array(12).fill("?").join(", ")})`);
    for (const row of rows.slice(1000, 3500)) insert.run(row);
    // …and this store's writer takes it back and writes on, past them, without the store being opened again.
    await store.claim("mixed", { ...holder, holder: "new:3:z" }, { staleMs: 0, gone: () => true });
    await store.appendRows(rows.slice(3500), "new:3:z");
    for (const q of [
      { user: "rare-user" },
      { user: "alice", limit: 1000 },
      { tenant: "globex", until: rows[3000]![4] },
    ]) {
      expect(
        (await store.query(q)).records.map((r) => r.seq),
        JSON.stringify(q),
      ).toEqual(bySql(store, q).records.map((r) => r.seq));
    }
    expect((await store.query({ user: "rare-user" })).records.map((r) => r.seq)).toEqual([
      3988, 2991, 1994, 997,
    ]);
    await store.close();
  });

  it("is checked by audit verify: an index that stops listing a record, or its time, is found", async () => {
    const { store, log } = await signedLog(storePath(), "v", (i) => ({ trace_id: i === 7 ? "run-7" : null }));
    await log.close();
    expect((await verifyAudit(store, trusted)).ok).toBe(true);

    store.db.prepare("DELETE FROM audit_keys WHERE key = 'trace:run-7'").run();
    expect((await store.query({ trace_id: "run-7" })).records).toEqual([]); // what the edit does to queries
    expect((await verifyAudit(store, trusted)).logs[0]!.finding).toMatchObject({
      seq: 7,
      problem: "edited",
      message: expect.stringMatching(
        /index does not list it under trace:run-7, so queries would not find record 7/,
      ),
    });
    // The key back, but as a BLOB: it reads as the same text, yet no query's text ever equals it.
    store.db.prepare("INSERT INTO audit_keys VALUES (CAST('trace:run-7' AS BLOB), 'v', 0)").run();
    expect((await store.query({ trace_id: "run-7" })).records).toEqual([]);
    expect((await verifyAudit(store, trusted)).logs[0]!.finding).toMatchObject({ seq: 7, problem: "edited" });
    store.db.prepare("DELETE FROM audit_keys WHERE key = CAST('trace:run-7' AS BLOB)").run();
    store.db.prepare("INSERT INTO audit_keys VALUES ('trace:run-7', 'v', 0)").run();
    expect((await verifyAudit(store, trusted)).ok).toBe(true);
    store.db.prepare("UPDATE audit_blocks SET max_time = ? WHERE log = 'v'").run(fields(20).time);
    expect((await verifyAudit(store, trusted)).logs[0]!.finding).toMatchObject({
      seq: 21,
      problem: "edited",
      message: expect.stringMatching(/index does not cover its time in its block/),
    });
    await store.close();
  });

  it("gives audit verify a page's blocks without reading the whole index (a scan made verify quadratic)", async () => {
    const { store, log } = await signedLog(storePath(), "plan");
    await log.close();
    const plan = store.db.prepare(`EXPLAIN QUERY PLAN ${KEYS_OF_BLOCKS}`).all("plan", 0, 9) as {
      detail: string;
    }[];
    expect(plan.map((p) => p.detail)).toEqual([
      "SEARCH audit_keys USING COVERING INDEX audit_keys_by_block (log=? AND block>? AND block<?)",
    ]);
    expect([...(await store.blockIndex!("plan", 1, 40)).keys]).toContain("0 user:alice");
    await store.close();
  });

  it("is checked by audit verify without false alarms while the log's writer goes on appending", async () => {
    const path = storePath();
    const { store, log } = await signedLog(path, "live");
    // `audit verify` beside the server: its own connection, and a record committed before each of its first pages.
    const reader = openSqliteStore(path);
    let next = 41;
    const live = {
      ...reader,
      rows: async (l: string, from: number, n: number) => {
        if (next <= 45) await log.appendDurable(fields(next++));
        return reader.rows(l, from, n);
      },
    };
    const report = await verifyAudit(live, { ...trusted, unsignedTail: 20, pageSize: 10 });
    expect(report.logs[0]!.finding).toBeNull();
    expect(report.logs[0]!.records).toBe(45);
    await log.close();
    await reader.close();
    await store.close();
  });
});
