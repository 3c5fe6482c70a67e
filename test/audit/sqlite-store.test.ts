import type Database from "better-sqlite3";
import { openSqliteStore } from "../../src/audit/sqlite.js";
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
