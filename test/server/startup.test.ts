/**
 * Starting next to stores that are not there yet: a Redis or a PostgreSQL still coming up is waited for (within
 * `server.startup_wait_seconds`), two instances starting together both start, and a store that never comes is
 * one clear error naming it and its address. And stopping: a request that never ends holds shutdown no longer
 * than `server.shutdown_seconds`, and the audit is flushed after it.
 */
import { randomBytes } from "node:crypto";
import { connect } from "node:net";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { OnbehalfServer } from "../../src/server/app.js";
import { type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { startOwnRedis } from "../support/redis-server.js";
import { call, serverConfig, startTestServer } from "../support/server.js";
import { startTcpProxy } from "../support/tcp-proxy.js";

const PG = process.env["ONBEHALF_TEST_PG"] ?? "postgres://postgres@127.0.0.1:5432/test";
const schema = `startup_${randomBytes(5).toString("hex")}`;

let idp: OidcProviderHandle;

/** A test server's config (keys in a temp dir) with these server, audit and limits settings. */
function withStores(settings: {
  wait?: number;
  audit?: Record<string, unknown>;
  limits?: { store: string };
}) {
  const base = serverConfig(idp);
  return {
    server: { ...base.server, startup_wait_seconds: settings.wait ?? 30 },
    audit: { ...base.audit, ...settings.audit },
    ...(settings.limits === undefined ? {} : { limits: settings.limits }),
  };
}

beforeAll(async () => {
  idp = await startOidcProvider();
});
afterAll(async () => {
  await idp?.close();
  const client = new pg.Client(PG);
  await client.connect();
  await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await client.end();
});

describe("starting before the stores are up", () => {
  it("waits for a Redis that is still starting, then serves", async () => {
    const redis = await startOwnRedis();
    await redis.stop();
    const starting = startTestServer(idp, withStores({ wait: 20, limits: { store: redis.url } }));
    await new Promise((r) => setTimeout(r, 800));
    await redis.start();
    const server = await starting;
    try {
      expect((await call(server.url, "GET", "/healthz")).body).toMatchObject({ status: "ok", state: true });
    } finally {
      await server.close();
      await redis.stop();
    }
  });

  it("gives up on a Redis that never comes with one error naming it and its address", async () => {
    const redis = await startOwnRedis();
    await redis.stop();
    const started = Date.now();
    const failure = await startTestServer(idp, withStores({ wait: 1, limits: { store: redis.url } })).catch(
      (e: unknown) => e as Error,
    );
    expect(failure).toBeInstanceOf(Error);
    expect((failure as Error).message).toMatch(
      new RegExp(`^the state store \\(Redis at ${redis.url}/?\\) did not answer within 1 s: `),
    );
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it("waits for a PostgreSQL that is not reachable yet, then serves", async () => {
    const proxy = await startTcpProxy(5432);
    await proxy.cut();
    const url = `postgres://postgres@127.0.0.1:${proxy.port}/test?schema=${schema}`;
    const starting = startTestServer(
      idp,
      withStores({ wait: 20, audit: { store: url, log_id: "startup-pg" } }),
    );
    await new Promise((r) => setTimeout(r, 800));
    await proxy.restore();
    let server: OnbehalfServer | undefined;
    try {
      server = await starting;
      expect((await call(server.url, "GET", "/healthz")).body).toMatchObject({ status: "ok", audit: true });
    } finally {
      await server?.close();
      await proxy.close();
    }
  });

  it("starts two instances at the same moment on one Redis and one PostgreSQL, each with a log of its own", async () => {
    const redis = await startOwnRedis();
    const config = withStores({ audit: { store: `${PG}?schema=${schema}` }, limits: { store: redis.url } });
    const servers = await Promise.all([startTestServer(idp, config), startTestServer(idp, config)]);
    try {
      const logs = servers.map((s) => s.governor.auditLog.logId).sort();
      expect(logs[1]).toBe(`${logs[0]}/2`); // no log_id configured: one log per process on this host
      for (const s of servers) expect((await call(s.url, "GET", "/healthz")).status).toBe(200);
    } finally {
      await Promise.all(servers.map((s) => s.close()));
      await redis.stop();
    }
  });

  it("closes a request that never ends after server.shutdown_seconds, then flushes the audit", async () => {
    const base = serverConfig(idp);
    const server = await startTestServer(idp, { server: { ...base.server, shutdown_seconds: 1 } });
    // A client that sends half a request and stays: fastify waits for it, shutdown does not.
    const { port } = new URL(server.url);
    const socket = connect(Number(port), "127.0.0.1");
    await new Promise((r) => socket.once("connect", r));
    socket.write(
      "POST /v1/check HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
    );
    const ended = new Promise((r) => socket.once("close", r));
    await new Promise((r) => setTimeout(r, 200));
    server.governor.recordAdmin("before shutdown", {});
    const started = Date.now();
    await server.close();
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(900);
    expect(took).toBeLessThan(3_000);
    await ended;
    expect(server.governor.auditLog.committed).toBeGreaterThanOrEqual(1);
  });
});
