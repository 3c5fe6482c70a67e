/** The shared store suite against the real PostgreSQL on 127.0.0.1:5432 (database `test`), one schema per store. */
import { randomBytes } from "node:crypto";
import pg from "pg";
import { describe, expect, it } from "vitest";
import { openPostgresStore } from "../../src/audit/postgres.js";
import type { AuditStore } from "../../src/audit/store.js";
import { describeStore } from "./store-suite.js";

const PG_URL = process.env["ONBEHALF_TEST_PG"] ?? "postgres://postgres@127.0.0.1:5432/test";
const schemas: string[] = [];

describeStore("PostgreSQL", {
  async open() {
    const schema = `t_${randomBytes(6).toString("hex")}`;
    schemas.push(schema);
    const store = openPostgresStore(`${PG_URL}?schema=${schema}`);
    await store.init();
    return store;
  },
  async exec(store: AuditStore, sql: string, params: unknown[]) {
    let i = 0;
    const text = sql.replace(/\?/g, () => `$${++i}`);
    return (await (store as AuditStore & { pool: pg.Pool }).pool.query(text, params)).rows;
  },
  async drop() {
    const client = new pg.Client(PG_URL);
    await client.connect();
    for (const s of schemas) await client.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
    await client.end();
  },
});

describe("PostgreSQL setup", () => {
  it("lets instances that start together on a fresh schema all set it up", async () => {
    for (let round = 0; round < 5; round++) {
      const schema = `t_${randomBytes(6).toString("hex")}`;
      schemas.push(schema);
      const stores = Array.from({ length: 3 }, () => openPostgresStore(`${PG_URL}?schema=${schema}`));
      const setups = await Promise.allSettled(stores.map((s) => s.init()));
      await Promise.all(stores.map((s) => s.close()));
      expect(setups.map((s) => s.status)).toEqual(["fulfilled", "fulfilled", "fulfilled"]);
    }
  });
});
