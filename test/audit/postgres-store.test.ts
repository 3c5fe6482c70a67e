/** The shared store suite against the real PostgreSQL on 127.0.0.1:5432 (database `test`), one schema per store. */
import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { openPostgresStore } from "../../src/audit/postgres.js";
import { type AuditFields, GENESIS_HASH, type SealedRecord, seal } from "../../src/audit/record.js";
import { type AuditStore, failureOf } from "../../src/audit/store.js";
import { describeStore, fields } from "./store-suite.js";

const PG_URL = process.env["ONBEHALF_TEST_PG"] ?? "postgres://postgres@127.0.0.1:5432/test";
/** Every schema this file makes, dropped once its last test has run (the store suite's, setup's and COPY's). */
const schemas: string[] = [];
afterAll(async () => {
  const client = new pg.Client(PG_URL);
  await client.connect();
  for (const s of schemas) await client.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
  await client.end();
});

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

describe("PostgreSQL, large batches (COPY)", () => {
  const holder = { holder: "test:1:copy", host: "test", pid: 1, label: "test" };
  async function fresh() {
    const schema = `t_${randomBytes(6).toString("hex")}`;
    schemas.push(schema);
    const store = openPostgresStore(`${PG_URL}?schema=${schema}`);
    await store.init();
    await store.claim("log", holder, { staleMs: 60_000, gone: () => false });
    return store;
  }
  /** Records `from`..`to` of log "log", sealed in a chain from `prev`. */
  function sealed(from: number, to: number, over: (i: number) => Partial<AuditFields> = () => ({})) {
    const batch: SealedRecord[] = [];
    let prev = GENESIS_HASH;
    for (let i = from; i <= to; i++) {
      const r = seal(fields(i, over(i)), "log", i, prev);
      prev = r.leafHash;
      batch.push(r);
    }
    return batch;
  }
  const failure = (p: Promise<void>) => p.then(() => "committed", failureOf);

  it("stores every byte of text that COPY's format escapes exactly as it was sealed", async () => {
    const store = await fresh();
    const odd = ["tab\there", "line\nbreak", "carriage\rreturn", "back\\slash \\N \\t", "ünï 𝄞 \u2028"];
    const batch = sealed(1, 100, (i) => ({
      user: odd[i % odd.length]!,
      tool: i % 2 === 0 ? `tool\t${i}` : null,
      reason: odd[(i + 1) % odd.length]!,
      trace_id: i % 3 === 0 ? null : `\\N${i}`,
    }));
    await store.append(batch, holder.holder);
    const rows = await store.rows("log", 1, 1000);
    expect(rows.map((r) => [r.seq, r.canonical, r.leafHash])).toEqual(
      batch.map((r) => [r.seq, r.canonical, r.leafHash]),
    );
    expect(rows.map((r) => [r.columns.user, r.columns.tool, r.columns.trace_id])).toEqual(
      batch.map((r) => [r.fields.user, r.fields.tool, r.fields.trace_id]),
    );
    expect((await store.query({ user: "tab\there", limit: 1000 })).records.length).toBe(20);
    await store.close();
  });

  it("commits none of a batch the database refuses, one sent again, or one from a writer without the claim", async () => {
    const store = await fresh();
    // a NUL in a column: text PostgreSQL cannot hold (the writer then stores the rest and a stub for it)
    expect(
      await failure(
        store.append(
          sealed(1, 100, (i) => (i === 50 ? { tool: "a\u0000b" } : {})),
          holder.holder,
        ),
      ),
    ).toBe("rejected");
    expect(await store.head("log")).toBeNull();
    await store.append(sealed(1, 100), holder.holder);
    // the same batch again (its acknowledgement lost): a conflict the writer settles by its leaf hashes
    expect(await failure(store.append(sealed(1, 100), holder.holder))).toBe("conflict");
    expect(await failure(store.append(sealed(101, 200), "someone-else"))).toBe("conflict");
    expect((await store.head("log"))?.seq).toBe(100);
    await store.close();
  });

  /** Another session holding the claim's row: a batch's renewal waits on its lock, as on a database that hangs. */
  async function blockClaim(store: AuditStore & { pool: pg.Pool }) {
    const blocker = new pg.Client(store.pool.options); // the same database and schema
    await blocker.connect();
    await blocker.query("BEGIN");
    await blocker.query("SELECT * FROM audit_writers WHERE log = 'log' FOR UPDATE");
    return {
      blocker,
      async release() {
        await blocker.query("ROLLBACK").catch(() => {});
        await blocker.end();
      },
    };
  }

  it("fails a COPY the database does not answer within the query timeout instead of waiting for it", async () => {
    const store = await fresh();
    const { release } = await blockClaim(store);
    try {
      const started = Date.now();
      const outcome = await store.append(sealed(1, 100), holder.holder).then(
        () => "committed",
        (e: Error) => `${failureOf(e)}: ${e.message}`,
      );
      expect(outcome).toMatch(/^unavailable: .*did not answer within 5 s/);
      expect(Date.now() - started).toBeLessThan(8_000);
    } finally {
      await release();
    }
    expect(await store.head("log")).toBeNull();
    await store.append(sealed(1, 100), holder.holder); // and the store works on
    expect((await store.head("log"))?.seq).toBe(100);
    await store.close();
  }, 20_000);

  it("fails a COPY whose connection the database drops, without taking the process down", async () => {
    const store = await fresh();
    const { blocker, release } = await blockClaim(store);
    try {
      const writing = store.append(sealed(1, 100), holder.holder).then(
        () => "committed",
        (e: Error) => `${failureOf(e)}: ${e.message}`,
      );
      // the database ends the writer's session mid-write (a restart, a failover, pg_terminate_backend): only the
      // session waiting on the blocker's lock, never another test file's
      let terminated = false;
      for (let i = 0; i < 100 && !terminated; i++) {
        const killed = await blocker.query(
          "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pg_backend_pid() = ANY (pg_blocking_pids(pid))",
        );
        terminated = killed.rowCount === 1;
        if (!terminated) await new Promise((r) => setTimeout(r, 20));
      }
      expect(terminated).toBe(true);
      const outcome = await writing;
      expect(outcome).toMatch(/^unavailable: /);
      expect(outcome).not.toMatch(/did not answer within/); // failed by the dropped connection, not the timeout
    } finally {
      await release();
    }
    await store.append(sealed(1, 100), holder.holder); // a new connection: the store works on
    expect((await store.head("log"))?.seq).toBe(100);
    await store.close();
  });
});
