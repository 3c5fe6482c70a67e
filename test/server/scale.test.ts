/**
 * Scale-out on real PostgreSQL and Redis: two control-plane instances behave as one (a human's rate limit,
 * the audit, live policy), and each fails closed while a store is away and recovers when it is back.
 */
import { randomBytes, webcrypto } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { SignJWT } from "jose";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openPostgresStore } from "../../src/audit/postgres.js";
import { verifyAudit } from "../../src/audit/verify.js";
import { loadOrCreateSigningKey } from "../../src/identity/keys.js";
import type { OnbehalfServer } from "../../src/server/app.js";
import { MAX_CONSOLE_SESSIONS_PER_OWNER } from "../../src/server/state.js";
import { type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { startOwnRedis } from "../support/redis-server.js";
import { ACME_POLICY, ADMIN, call, serverConfig, startTestServer, userToken } from "../support/server.js";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy.js";

const PG = process.env["ONBEHALF_TEST_PG"] ?? "postgres://postgres@127.0.0.1:5432/test";
const REDIS = `${process.env["ONBEHALF_TEST_REDIS"] ?? "redis://127.0.0.1:6379"}/7`;
const schema = `scale_${randomBytes(5).toString("hex")}`;
const keys = mkdtempSync(join(tmpdir(), "onbehalf-scale-"));

let idp: OidcProviderHandle;
let a: OnbehalfServer;
let b: OnbehalfServer;
/** The key of an agent runtime that authenticates with private_key_jwt (registered on both instances). */
let runtimeKey: webcrypto.CryptoKeyPair;

/** Two instances sharing one PostgreSQL schema, one Redis, one token key and one audit key. */
async function instance(logId: string): Promise<OnbehalfServer> {
  const base = serverConfig(idp);
  return startTestServer(idp, {
    server: { ...base.server, signing_key: join(keys, "server.jwk"), public_url: "https://onbehalf.test" },
    tenants: [
      {
        id: "acme",
        policy: { ...ACME_POLICY, defaults: { "*": { permission: "allow", rate_limit_per_minute: 60 } } },
        clients: await runtimeClients(),
      },
    ],
    audit: {
      store: `${PG}?schema=${schema}`,
      log_id: logId,
      signing_key: join(keys, "audit.jwk"),
      flush_ms: 1,
      checkpoint_every: 25,
    },
    limits: { store: REDIS },
  });
}

beforeAll(async () => {
  idp = await startOidcProvider();
  runtimeKey = (await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
    "sign",
    "verify",
  ])) as webcrypto.CryptoKeyPair;
  const redis = new Redis(REDIS);
  await redis.flushdb();
  redis.disconnect();
  a = await instance("instance-a");
  b = await instance("instance-b");
});
afterAll(async () => {
  await Promise.allSettled([a?.close(), b?.close()]);
  await idp?.close();
  const client = new pg.Client(PG);
  await client.connect();
  await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await client.end();
  const redis = new Redis(REDIS); // this file's own database, left empty
  await redis.flushdb();
  redis.disconnect();
});

/** The agent runtime `jwt-runtime`, registered with its public key (private_key_jwt). */
async function runtimeClients() {
  const jwk = await webcrypto.subtle.exportKey("jwk", runtimeKey.publicKey);
  return [
    {
      client_id: "jwt-runtime",
      auth: "private_key_jwt" as const,
      jwks: { keys: [{ ...jwk, kty: "EC" as const, kid: "runtime-1" }] },
      agents: ["researcher"],
    },
  ];
}

/** A client assertion of the runtime registered as `jwt-runtime` (private_key_jwt), for the token endpoint. */
function runtimeAssertion(): Promise<string> {
  return new SignJWT({ jti: randomBytes(8).toString("hex") })
    .setProtectedHeader({ alg: "ES256", kid: "runtime-1" })
    .setIssuer("jwt-runtime")
    .setSubject("jwt-runtime")
    .setAudience("https://onbehalf.test")
    .setIssuedAt()
    .setExpirationTime("1m")
    .sign(runtimeKey.privateKey);
}

/** Erin's token exchanged for a delegation to `researcher`, the runtime authenticating with `assertion`. */
async function exchangeAsRuntime(url: string, assertion: string) {
  return call(url, "POST", "/v1/token", {
    raw: new URLSearchParams({
      grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
      subject_token: await userToken(idp, "erin"),
      subject_token_type: "urn:ietf:params:oauth:token-type:access_token",
      actor: "researcher",
      client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
      client_assertion: assertion,
    }).toString(),
    contentType: "application/x-www-form-urlencoded",
  });
}

/** Signs in to the console at `url` with the admin token: the session cookie and its CSRF token. */
async function consoleSignIn(url: string): Promise<{ cookie: string; csrf: string }> {
  const r = await call(url, "POST", "/ui/session", { body: { token: ADMIN } });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  const cookie = (r.headers.get("set-cookie") ?? "").split(";")[0] ?? "";
  return { cookie, csrf: r.body.csrf };
}

describe("two instances on one PostgreSQL and one Redis", () => {
  it("holds one human's per-minute limit across both: 60 of 100 calls spread over both", async () => {
    const alice = await userToken(idp, "alice");
    const answers = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        call(i % 2 === 0 ? a.url : b.url, "POST", "/v1/check", {
          token: alice,
          body: { tool: "get_customer", args: { i }, agent: { name: `agent-${i % 5}` } },
        }),
      ),
    );
    const allowed = answers.filter((r) => r.body.decision === "allow").length;
    expect(allowed).toBeGreaterThanOrEqual(57);
    expect(allowed).toBeLessThanOrEqual(63);
    expect(answers.filter((r) => r.body.reason_code === "rate_limited").length).toBe(100 - allowed);
    // another human still has a budget of their own
    const bob = await userToken(idp, "bob");
    expect(
      (
        await call(b.url, "POST", "/v1/check", {
          token: bob,
          body: { tool: "get_customer", agent: { name: "x" } },
        })
      ).body.decision,
    ).toBe("allow");
  });

  it("makes the audit of both queryable through either, and each instance's log verifies", async () => {
    await Promise.all([a.governor.flush(), b.governor.flush()]);
    const records = (await call(a.url, "GET", "/v1/audit?user=alice&limit=1000", { token: ADMIN })).body
      .records as { log: string }[];
    expect(new Set(records.map((r) => r.log))).toEqual(new Set(["instance-a", "instance-b"]));
    expect(records.length).toBe(100);
    await Promise.all([a.governor.auditLog.checkpoint(), b.governor.auditLog.checkpoint()]);
    const store = openPostgresStore(`${PG}?schema=${schema}`);
    const key = loadOrCreateSigningKey(join(keys, "audit.jwk"));
    const { createPublicKey } = await import("node:crypto");
    const report = await verifyAudit(store, { keys: [createPublicKey(key.privateKey)] });
    await store.close();
    expect(report.logs.map((l) => [l.log, l.finding])).toEqual([
      ["instance-a", null],
      ["instance-b", null],
    ]);
    expect(report.logs.every((l) => l.verifiedCheckpoints > 0)).toBe(true);
  });

  it("applies a policy patch made through one instance on the other within a second", async () => {
    const carol = await userToken(idp, "carol");
    const ask = () =>
      call(b.url, "POST", "/v1/check", { token: carol, body: { tool: "read_email", agent: { name: "x" } } });
    expect((await ask()).body.decision).toBe("allow");
    const patched = await call(a.url, "PATCH", "/v1/admin/tenants/acme/policy", {
      token: ADMIN,
      body: { tools: { read_email: { "*": { permission: "deny" } } } },
    });
    expect(patched.status).toBe(200);
    const t0 = Date.now();
    let decision = "allow";
    while (decision !== "deny" && Date.now() - t0 < 3_000) {
      decision = (await ask()).body.decision;
      if (decision !== "deny") await new Promise((r) => setTimeout(r, 20));
    }
    expect(decision).toBe("deny");
    expect(Date.now() - t0).toBeLessThan(1_000);
  });

  it("accepts a delegation token minted by one instance at the other", async () => {
    const dana = await userToken(idp, "dana");
    const minted = await call(a.url, "POST", "/v1/token", {
      body: {
        grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
        subject_token: dana,
        subject_token_type: "urn:ietf:params:oauth:token-type:access_token",
        actor: "planner",
      },
    });
    const r = await call(b.url, "POST", "/v1/check", {
      token: minted.body.access_token,
      body: { tool: "get_customer", agent: { name: "x" } },
    });
    expect(r.body).toMatchObject({ decision: "allow", chain: ["planner"] });
  });

  it("accepts a client assertion once across both: replayed at the other instance it is refused", async () => {
    const assertion = await runtimeAssertion();
    const first = await exchangeAsRuntime(a.url, assertion);
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    expect(await exchangeAsRuntime(b.url, assertion)).toMatchObject({
      status: 400,
      body: {
        error: "invalid_client",
        error_description: "client jwt-runtime: this client_assertion was used before",
      },
    });
  });
});

describe("the console across two instances", () => {
  it("knows a session opened at one instance at the other, and ends it at both when signed out at one", async () => {
    const { cookie, csrf } = await consoleSignIn(a.url);
    expect(cookie).toMatch(/^onbehalf_console=./);
    const atB = await call(b.url, "GET", "/ui/api/me", { headers: { cookie } });
    expect(atB.status).toBe(200);
    expect(atB.body).toMatchObject({ role: "admin", csrf });
    // a change at the other instance needs the same CSRF token
    expect((await call(b.url, "DELETE", "/ui/session", { headers: { cookie } })).status).toBe(403);
    expect(
      (await call(b.url, "DELETE", "/ui/session", { headers: { cookie, "x-csrf-token": csrf } })).status,
    ).toBe(204);
    expect((await call(a.url, "GET", "/ui/api/me", { headers: { cookie } })).status).toBe(401);
    expect((await call(b.url, "GET", "/ui/api/me", { headers: { cookie } })).status).toBe(401);
  });

  it("bounds the sessions of one holder across both: one too many, opened at either, ends their oldest at both", async () => {
    const cookies: string[] = [];
    for (let i = 0; i <= MAX_CONSOLE_SESSIONS_PER_OWNER; i++)
      cookies.push((await consoleSignIn(i % 2 ? b.url : a.url)).cookie);
    const status = async (url: string, cookie: string) =>
      (await call(url, "GET", "/ui/api/me", { headers: { cookie } })).status;
    expect([await status(a.url, cookies[0]!), await status(b.url, cookies[0]!)]).toEqual([401, 401]);
    for (const cookie of cookies.slice(1)) expect(await status(b.url, cookie)).toBe(200);
  });
});

/** A refund the policy asks a human about, asked before an outage: its pending approval's id. */
async function pendingRefund(server: OnbehalfServer, token: string): Promise<string> {
  const r = await call(server.url, "POST", "/v1/check", {
    token,
    body: { tool: "issue_refund", args: { order: "o-3", amount: 900 }, agent: { name: "x" } },
  });
  expect(r.body.decision, JSON.stringify(r.body)).toBe("ask");
  return r.body.approval.id;
}

/**
 * While a store is down: a call the policy denies is answered with the policy's denial, and one it asks a human
 * about, asked again with its approval or not, is denied as an answer (200), never as an outage (503), which a
 * fail-open client takes as leave to run.
 */
async function expectPolicyKept(server: OnbehalfServer, token: string, approval: string): Promise<void> {
  const denied = await call(server.url, "POST", "/v1/check", {
    token,
    body: { tool: "launch_rockets", agent: { name: "x" } },
  });
  expect([denied.status, denied.body.decision, denied.body.reason_code]).toEqual([
    200,
    "deny",
    "permission_deny",
  ]);
  const asked = await call(server.url, "POST", "/v1/check", {
    token,
    body: { tool: "issue_refund", args: { order: "o-2", amount: 900 }, agent: { name: "x" } },
  });
  expect([asked.status, asked.body.decision, asked.body.reason_code]).toEqual([200, "deny", "fail_closed"]);
  expect(asked.body.reason).toMatch(/unavailable/);
  const again = await call(server.url, "POST", "/v1/check", {
    token,
    body: { tool: "issue_refund", args: { order: "o-3", amount: 900 }, agent: { name: "x" }, approval },
  });
  expect([again.status, again.body.decision, again.body.reason_code]).toEqual([200, "deny", "fail_closed"]);
}

/**
 * `body` with a server whose audit log `name` is in its own schema of the real PostgreSQL, reached through a proxy
 * the test can cut or hold; the server, the proxy and the schema are gone after.
 */
async function withAuditBehindProxy(
  name: string,
  body: (server: OnbehalfServer, proxy: TcpProxy) => Promise<void>,
): Promise<void> {
  const proxy = await startTcpProxy(5432);
  const url = new URL(PG);
  url.port = String(proxy.port);
  const server = await startTestServer(idp, {
    audit: {
      store: `${url.toString()}?schema=${schema}_${name}`,
      log_id: name,
      flush_ms: 1,
      signing_key: join(keys, "audit.jwk"),
    },
  });
  try {
    await body(server, proxy);
  } finally {
    proxy.release();
    await server.close();
    await proxy.close();
    const client = new pg.Client(PG);
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS ${schema}_${name} CASCADE`);
    await client.end();
  }
}

describe("fail closed", () => {
  it("denies with 503 while Redis is away, and recovers by itself when it is back", async () => {
    const redis = await startOwnRedis();
    const server = await startTestServer(idp, {
      tenants: [
        {
          id: "acme",
          policy: {
            defaults: { "*": { permission: "allow", rate_limit_per_minute: 1000 } },
            rules: ACME_POLICY.rules,
          },
        },
      ],
      limits: { store: redis.url },
    });
    try {
      const alice = await userToken(idp, "alice");
      const check = () =>
        call(server.url, "POST", "/v1/check", {
          token: alice,
          body: { tool: "get_customer", agent: { name: "x" } },
        });
      expect((await check()).status).toBe(200);
      const approval = await pendingRefund(server, alice);
      await redis.stop();
      const down = await check();
      expect(down.status).toBe(503);
      expect(down.body).toMatchObject({ decision: "deny", reason_code: "fail_closed" });
      await expectPolicyKept(server, alice, approval);
      expect((await call(server.url, "GET", "/healthz")).status).toBe(503);
      await redis.start();
      let status = 0;
      for (let i = 0; i < 60 && status !== 200; i++) {
        await new Promise((r) => setTimeout(r, 100));
        status = (await check()).status;
      }
      expect(status).toBe(200);
    } finally {
      await server.close();
      await redis.stop();
    }
  });

  it("refuses console sessions and client assertions while Redis is unreachable, and loses neither", async () => {
    // A proxy in front of the shared Redis: cut, Redis keeps its data; restored, what it held is back.
    const shared = new URL(REDIS);
    const proxy = await startTcpProxy(Number(shared.port || 6379), shared.hostname);
    const server = await startTestServer(idp, {
      server: { ...serverConfig(idp).server, public_url: "https://onbehalf.test" },
      tenants: [{ id: "acme", policy: ACME_POLICY, clients: await runtimeClients() }],
      limits: {
        store: `redis://127.0.0.1:${proxy.port}${shared.pathname}`,
        redis_prefix: "onbehalf-outage:",
      },
    });
    try {
      const session = await consoleSignIn(server.url);
      const me = () => call(server.url, "GET", "/ui/api/me", { headers: { cookie: session.cookie } });
      expect((await me()).status).toBe(200);
      const assertion = await runtimeAssertion();
      await proxy.cut();
      // a session that cannot be read is refused, not guessed; an assertion whose one use cannot be recorded
      // mints nothing
      expect((await me()).status).toBe(503);
      expect(await exchangeAsRuntime(server.url, assertion)).toMatchObject({
        status: 503,
        body: { error: "temporarily_unavailable" },
      });
      await proxy.restore();
      let status = 0;
      for (let i = 0; i < 60 && status !== 200; i++) {
        await new Promise((r) => setTimeout(r, 100));
        status = (await me()).status;
      }
      expect(status).toBe(200); // the session survived the outage
      const later = await exchangeAsRuntime(server.url, assertion); // and the refused assertion was not used up
      expect(later.status, JSON.stringify(later.body)).toBe(200);
      expect((await exchangeAsRuntime(server.url, assertion)).status).toBe(400);
    } finally {
      await server.close();
      await proxy.close();
    }
  });

  it("denies with 503 while the audit store is away, and recovers by itself when it is back", async () => {
    await withAuditBehindProxy("down", async (server, proxy) => {
      const alice = await userToken(idp, "alice");
      const check = () =>
        call(server.url, "POST", "/v1/check", {
          token: alice,
          body: { tool: "get_customer", agent: { name: "x" } },
        });
      expect((await check()).status).toBe(200);
      const approval = await pendingRefund(server, alice);
      await server.governor.flush();
      await proxy.cut();
      // A call the policy asks a human about, whose record cannot be written: denied as an answer (200), not an
      // outage (503), which a fail-open client would run without the approval it needs.
      const asked = await call(server.url, "POST", "/v1/check", {
        token: alice,
        body: { tool: "issue_refund", args: { order: "o-1", amount: 900 }, agent: { name: "x" } },
      });
      expect(asked.status, JSON.stringify(asked.body)).toBe(200);
      expect(asked.body).toMatchObject({ decision: "deny", reason_code: "fail_closed" });
      await check(); // its record cannot be written: from the first failed write on, calls are denied
      let down = await check();
      for (let i = 0; i < 50 && down.status !== 503; i++) {
        await new Promise((r) => setTimeout(r, 50));
        down = await check();
      }
      expect(down.status).toBe(503);
      expect(down.body).toMatchObject({ decision: "deny", reason_code: "fail_closed" });
      await expectPolicyKept(server, alice, approval);
      await proxy.restore();
      let status = 0;
      for (let i = 0; i < 100 && status !== 200; i++) {
        await new Promise((r) => setTimeout(r, 100));
        status = (await check()).status;
      }
      expect(status).toBe(200);
      await server.governor.flush(); // nothing was lost: the queued records were written once it was back
      const rows = await server.governor.queryAudit({ user: "alice", limit: 1000 });
      expect(rows.records.filter((r) => r.log === "down").length).toBeGreaterThanOrEqual(4);
    });
  });

  it("answers a denied or asked call well within a client's timeout while the audit store hangs, and keeps its record", async () => {
    await withAuditBehindProxy("hung", async (server, proxy) => {
      const alice = await userToken(idp, "alice");
      const timed = async (body: Record<string, unknown>) => {
        const started = Date.now();
        const r = await call(server.url, "POST", "/v1/check", {
          token: alice,
          body: { agent: { name: "x" }, ...body },
        });
        return {
          ms: Date.now() - started,
          status: r.status,
          decision: r.body.decision,
          reason_code: r.body.reason_code,
          call_id: r.body.call_id,
        };
      };
      expect((await timed({ tool: "get_customer" })).decision).toBe("allow");
      await server.governor.flush();
      proxy.hold(); // the database keeps every connection and answers nothing
      const denied = await timed({ tool: "launch_rockets" });
      const asked = await timed({ tool: "issue_refund", args: { order: "o-4", amount: 900 } });
      // answered, not left for the Python client's 2 s timeout (which a fail-open client takes for an outage)
      expect([denied.status, denied.decision, denied.reason_code]).toEqual([200, "deny", "permission_deny"]);
      expect([asked.status, asked.decision, asked.reason_code]).toEqual([200, "deny", "fail_closed"]);
      expect(denied.ms).toBeLessThan(2_000);
      expect(asked.ms).toBeLessThan(2_000);
      proxy.release();
      await server.governor.flush(); // the denial's record waited, and is written once the store answers
      const rows = await server.governor.queryAudit({ user: "alice", limit: 100 });
      expect(rows.records.filter((r) => r.call_id === denied.call_id).map((r) => r.reason_code)).toEqual([
        "permission_deny",
      ]);
    });
  }, 60_000);
});
