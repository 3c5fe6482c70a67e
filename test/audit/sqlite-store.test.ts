import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type Database from "better-sqlite3";
import { openSqliteStore } from "../../src/audit/sqlite.js";
import { openThreadedSqliteStore } from "../../src/audit/sqlite-thread.js";
import type { AuditStore } from "../../src/audit/store.js";
import { describeStore } from "./store-suite.js";

/** SQL run on the store's own connection (the tampering tests edit the file under it). */
async function exec(store: AuditStore, sql: string, params: unknown[]) {
  const db = (store as AuditStore & { db: Database.Database }).db;
  const stmt = db.prepare(sql);
  if (stmt.reader) return stmt.all(...params) as Record<string, unknown>[];
  stmt.run(...params);
  return [];
}

describeStore("SQLite", {
  async open() {
    return openSqliteStore(":memory:");
  },
  exec,
});

// The same suite with the commits on a worker thread (audit.writer_thread): a file per store, as it needs.
describeStore("SQLite, commits on a writer thread", {
  async open() {
    return openThreadedSqliteStore(join(mkdtempSync(join(tmpdir(), "onbehalf-sqlite-thread-")), "audit.db"));
  },
  exec,
});
