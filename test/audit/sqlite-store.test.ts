import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type Database from "better-sqlite3";
import { openSqliteStore } from "../../src/audit/sqlite.js";
import { openThreadedSqliteStore } from "../../src/audit/sqlite-thread.js";
import type { AuditStore } from "../../src/audit/store.js";
import { describeStore } from "./store-suite.js";

describeStore("SQLite", {
  async open() {
    return openSqliteStore(":memory:");
  },
  async exec(store: AuditStore, sql: string, params: unknown[]) {
    const db = (store as AuditStore & { db: Database.Database }).db;
    const stmt = db.prepare(sql);
    if (stmt.reader) return stmt.all(...params) as Record<string, unknown>[];
    stmt.run(...params);
    return [];
  },
});

// The same suite with the commits on a worker thread (audit.writer_thread): a file per store, as it needs.
describeStore("SQLite, commits on a writer thread", {
  async open() {
    return openThreadedSqliteStore(join(mkdtempSync(join(tmpdir(), "onbehalf-sqlite-thread-")), "audit.db"));
  },
  async exec(store: AuditStore, sql: string, params: unknown[]) {
    const db = (store as AuditStore & { db: Database.Database }).db;
    const stmt = db.prepare(sql);
    if (stmt.reader) return stmt.all(...params) as Record<string, unknown>[];
    stmt.run(...params);
    return [];
  },
});
