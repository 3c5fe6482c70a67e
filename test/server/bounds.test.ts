/**
 * What the control plane keeps between requests is bounded in number and in time: calls waiting for their
 * result go oldest first at `server.max_pending_calls` and after `server.pending_call_seconds`, their outcome
 * audited as `expired` and counted; a late report is answered 404 saying why; `"report": false` keeps nothing.
 * In memory, and in Redis across two instances.
 */
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { OnbehalfError } from "../../src/errors.js";
import type { StoredApproval } from "../../src/govern/approvals.js";
import type { OnbehalfServer } from "../../src/server/app.js";
import {
  createMemoryState,
  MAX_CONSOLE_SESSIONS,
  MAX_CONSOLE_SESSIONS_PER_OWNER,
  type OpenCall,
  type StateBounds,
  type StateStore,
} from "../../src/server/state.js";
import { createRedisState } from "../../src/server/state-redis.js";
import { type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { ADMIN, call, metricValue, serverConfig, startTestServer, userToken } from "../support/server.js";

const REDIS = `${process.env["ONBEHALF_TEST_REDIS"] ?? "redis://127.0.0.1:6379"}/11`;

let idp: OidcProviderHandle;
let alice: string;

beforeAll(async () => {
  idp = await startOidcProvider();
  alice = await userToken(idp, "alice");
});
afterAll(async () => {
  await idp?.close();
});

async function start(extra: Record<string, unknown> = {}, limits?: string): Promise<OnbehalfServer> {
  const base = serverConfig(idp);
  return startTestServer(idp, {
    server: { ...base.server, max_pending_calls: 3, pending_call_seconds: 1, ...extra },
    ...(limits === undefined ? {} : { limits: { store: limits } }),
  });
}

const check = async (url: string, i: number, more: Record<string, unknown> = {}) => {
  const r = await call(url, "POST", "/v1/check", {
    token: alice,
    body: { tool: "get_customer", args: { id: `c-${i}` }, agent: { name: "bot" }, ...more },
  });
  expect(r.body.decision).toBe("allow");
  return r.body.call_id as string;
};
const report = (url: string, id: string) =>
  call(url, "POST", `/v1/calls/${id}/result`, { token: alice, body: { status: "ok", output: { id } } });
// biome-ignore lint/suspicious/noExplicitAny: audit records are read field by field
const recordsOf = async (url: string, id: string): Promise<any[]> =>
  (await call(url, "GET", "/v1/audit?user=alice&limit=500", { token: ADMIN })).body.records.filter(
    (r: { call_id: string }) => r.call_id === id,
  );
/** `body` run against an in-memory state store and a Redis one (this file's database, emptied after). */
async function inBothStores(
  bounds: StateBounds,
  prefix: string,
  body: (store: StateStore) => Promise<void>,
): Promise<void> {
  const memory = createMemoryState(bounds);
  const redis = await createRedisState(REDIS, { prefix, bounds });
  try {
    for (const store of [memory, redis]) await body(store);
  } finally {
    await Promise.allSettled([memory.close(), redis.close()]);
    const own = new Redis(REDIS);
    await own.flushdb();
    own.disconnect();
  }
}

const evictions = (url: string, why: string) =>
  metricValue(url, `onbehalf_state_evictions_total{what="pending_call",why="${why}"}`);

describe("one user's share of the waiting calls", () => {
  const waiting = (user: string, i: number) =>
    ({
      callId: `${user}-${i}`,
      user,
      tenant: user === "mallory" ? "acme" : "globex",
      tool: "get_customer",
      postTransform: "audit",
      redact: [],
      fields: {},
      startedAt: 0,
      approvalId: null,
    }) as unknown as OpenCall;

  it("lets a user push out only their own oldest calls, in memory and in Redis", async () => {
    const bounds = { maxCalls: 10, maxApprovals: 10, maxCallsPerUser: 3, maxApprovalsPerUser: 10 };
    await inBothStores(bounds, "bounds-users:", async (store) => {
      await store.putCall(waiting("bob", 1), 60_000);
      const pushed = [];
      for (let i = 1; i <= 8; i++) pushed.push(...(await store.putCall(waiting("mallory", i), 60_000)));
      expect(pushed.map((g) => `${g.why}:${g.call.callId}`)).toEqual(
        [1, 2, 3, 4, 5].map((i) => `user_bound:mallory-${i}`),
      );
      expect(await store.getCall("bob-1")).not.toBeNull();
      expect(await store.goneWhy("mallory-1")).toBe("user_bound");
      // taking a call frees its place in its user's share
      expect(await store.takeCall("mallory-8")).not.toBeNull();
      expect(await store.putCall(waiting("mallory", 9), 60_000)).toEqual([]);
      // the bound of all still holds, oldest first, whoever's
      const all = [];
      for (let i = 1; i <= 7; i++) all.push(...(await store.putCall(waiting(`user${i}`, 1), 60_000)));
      expect(all.filter((g) => g.why === "evicted").map((g) => g.call.callId)).toEqual(["bob-1"]);
    });
  });

  it("audits a call pushed out by its own user's bound as expired, and says why at its late report", async () => {
    const server = await start({
      max_pending_calls: 100,
      max_pending_calls_per_user: 2,
      pending_call_seconds: 60,
    });
    try {
      const first = await check(server.url, 1);
      await check(server.url, 2);
      await check(server.url, 3);
      expect(await evictions(server.url, "user_bound")).toBe(1);
      const late = await report(server.url, first);
      expect(late.status).toBe(404);
      expect(late.body.error.message).toContain("server.max_pending_calls_per_user");
      await server.governor.flush();
      expect((await recordsOf(server.url, first)).find((r) => r.kind === "outcome")).toMatchObject({
        outcome: "expired",
        reason: expect.stringContaining("its user had 2 calls waiting"),
      });
    } finally {
      await server.close();
    }
  });
});

describe("pending calls in memory", () => {
  let server: OnbehalfServer;
  beforeAll(async () => {
    server = await start({ pending_call_seconds: 60 });
  });
  afterAll(async () => {
    await server?.close();
  });

  it("evicts the oldest waiting call at the bound: audited as expired, counted, and its late report is a 404 saying why", async () => {
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push(await check(server.url, i));
    // 3 may wait: the two oldest went, in order
    for (const id of ids.slice(0, 2)) {
      const records = await vi.waitFor(async () => {
        const r = await recordsOf(server.url, id);
        expect(r).toHaveLength(2);
        return r;
      });
      expect(records.map((r) => `${r.kind}:${r.outcome}`).sort()).toEqual([
        "attempt:pending",
        "outcome:expired",
      ]);
      expect(records.find((r) => r.kind === "outcome").reason).toMatch(
        /evicted unreported.*max_pending_calls/,
      );
      const late = await report(server.url, id);
      expect(late.status).toBe(404);
      expect(late.body.error.message).toMatch(/evicted unreported when more than 3 calls were waiting/);
    }
    expect(await evictions(server.url, "bound")).toBe(2);
    for (const id of ids.slice(2)) expect((await report(server.url, id)).status).toBe(200);
    expect((await recordsOf(server.url, ids[4] as string)).map((r) => r.outcome).sort()).toEqual([
      "ok",
      "pending",
    ]);
  });

  it('keeps nothing for "report": false: the attempt says unreported, no outcome follows, nothing is evicted for it', async () => {
    const before = await evictions(server.url, "bound");
    const waiting = await check(server.url, 100);
    const unreported = [];
    for (let i = 0; i < 10; i++) unreported.push(await check(server.url, 200 + i, { report: false }));
    expect(await evictions(server.url, "bound")).toBe(before);
    const records = await recordsOf(server.url, unreported[0] as string);
    expect(records.map((r) => `${r.kind}:${r.outcome}`)).toEqual(["attempt:unreported"]);
    const late = await report(server.url, unreported[0] as string);
    expect(late.status).toBe(404);
    expect(late.body.error.message).toMatch(/"report": false/);
    expect((await report(server.url, waiting)).status).toBe(200);
  });
});

describe('"report": "token"', () => {
  let server: OnbehalfServer;
  beforeAll(async () => {
    server = await start({ max_pending_calls: 2, pending_call_seconds: 60 });
  });
  afterAll(async () => {
    await server?.close();
  });

  it("keeps nothing, and takes the result once when its report token comes back with it", async () => {
    const checked = await call(server.url, "POST", "/v1/check", {
      token: alice,
      body: { tool: "get_customer", args: { id: "c-t" }, agent: { name: "bot" }, report: "token" },
    });
    expect(checked.body.decision).toBe("allow");
    const id = checked.body.call_id as string;
    const reportToken = checked.body.report_token as string;
    expect(reportToken.split(".")).toHaveLength(3);
    // nothing waits: filling the bound evicts nothing
    for (let i = 0; i < 2; i++) await check(server.url, 400 + i);
    expect(await evictions(server.url, "bound")).toBe(0);
    expect((await report(server.url, id)).status).toBe(404); // without its token
    const withToken = (t: string, who = alice, callId = id) =>
      call(server.url, "POST", `/v1/calls/${callId}/result`, {
        token: who,
        body: { status: "ok", output: { id, ssn: "078-05-1120" }, report_token: t },
      });
    expect((await withToken(reportToken, alice, "another-call")).status).toBe(400);
    // a report token is no bearer token, and a bearer token is no report token
    expect((await call(server.url, "POST", "/v1/verify", { token: reportToken })).status).toBe(401);
    expect((await withToken(alice)).status).toBe(400);
    expect((await withToken(`${reportToken.slice(0, -4)}AAAA`)).status).toBe(400);
    expect((await withToken(reportToken, await userToken(idp, "bob"))).status).toBe(403);
    const done = await withToken(reportToken);
    expect(done.status).toBe(200);
    expect(done.body).toMatchObject({ action: "redact", output: { id, ssn: "[REDACTED]" } });
    expect((await withToken(reportToken)).status).toBe(409);
    expect((await recordsOf(server.url, id)).map((r) => `${r.kind}:${r.outcome}`).sort()).toEqual([
      "attempt:unreported",
      "outcome:ok",
    ]);
  });

  it("takes a report token once however many other token reports come after it (the bound of waiting calls is 2)", async () => {
    const tokenCheck = async (i: number) => {
      const r = await call(server.url, "POST", "/v1/check", {
        token: alice,
        body: { tool: "get_customer", args: { id: `c-r${i}` }, agent: { name: "bot" }, report: "token" },
      });
      return { id: r.body.call_id as string, token: r.body.report_token as string };
    };
    const send = (c: { id: string; token: string }, status: "ok" | "error") =>
      call(server.url, "POST", `/v1/calls/${c.id}/result`, {
        token: alice,
        body: {
          status,
          ...(status === "error" ? { error: "failed" } : { output: {} }),
          report_token: c.token,
        },
      });
    const first = await tokenCheck(0);
    expect((await send(first, "error")).status).toBe(200);
    for (let i = 1; i <= 5; i++) expect((await send(await tokenCheck(i), "ok")).status).toBe(200);
    expect((await send(first, "ok")).status).toBe(409);
    expect((await recordsOf(server.url, first.id)).filter((r) => r.kind === "outcome")).toHaveLength(1);
  });
});

describe("pending calls past their time", () => {
  let server: OnbehalfServer;
  beforeAll(async () => {
    server = await start({ max_pending_calls: 100 });
  });
  afterAll(async () => {
    await server?.close();
  });

  it("expires a call whose result does not come in time: audited as expired, counted, a late report is a 404", async () => {
    const id = await check(server.url, 1);
    await vi.waitFor(
      async () => expect((await recordsOf(server.url, id)).map((r) => r.outcome)).toContain("expired"),
      { timeout: 5_000, interval: 200 },
    );
    const out = (await recordsOf(server.url, id)).find((r) => r.kind === "outcome");
    expect(out).toMatchObject({ decision: "allow", outcome: "expired", tool: "get_customer" });
    expect(out.reason).toMatch(/no result was reported within 1 s/);
    expect(await evictions(server.url, "expired")).toBeGreaterThanOrEqual(1);
    const late = await report(server.url, id);
    expect(late.status).toBe(404);
    expect(late.body.error.message).toMatch(/none came within 1 s/);
  });
});

describe("pending calls in Redis, two instances", () => {
  let a: OnbehalfServer;
  let b: OnbehalfServer;
  beforeAll(async () => {
    const redis = new Redis(REDIS);
    await redis.flushdb();
    redis.disconnect();
    a = await start({ pending_call_seconds: 2 }, REDIS);
    b = await start({ pending_call_seconds: 2 }, REDIS);
  });
  afterAll(async () => {
    await Promise.allSettled([a?.close(), b?.close()]);
    const redis = new Redis(REDIS);
    await redis.flushdb();
    redis.disconnect();
  });

  it("shares the bound: a call checked on one instance is evicted by the other's, audited once, and its late report on either is a 404 saying why", async () => {
    const first = await check(a.url, 1);
    for (let i = 2; i <= 4; i++) await check(b.url, i); // the fourth waiting call evicts the first
    const onA = await recordsOf(a.url, first);
    const onB = await recordsOf(b.url, first);
    expect(onA.map((r) => `${r.kind}:${r.outcome}`)).toEqual(["attempt:pending"]);
    expect(onB.map((r) => `${r.kind}:${r.outcome}`)).toEqual(["outcome:expired"]); // by whoever evicted it
    for (const url of [a.url, b.url]) {
      const late = await report(url, first);
      expect(late.status).toBe(404);
      expect(late.body.error.message).toMatch(/evicted unreported/);
    }
    expect(await evictions(b.url, "bound")).toBe(1);
  });

  it("expires calls past their time exactly once across the instances", async () => {
    const ids = [await check(a.url, 10), await check(b.url, 11)];
    await new Promise((r) => setTimeout(r, 3_500));
    for (const id of ids) {
      const outcomes = [...(await recordsOf(a.url, id)), ...(await recordsOf(b.url, id))].filter(
        (r) => r.kind === "outcome",
      );
      expect(outcomes.map((r) => r.outcome)).toEqual(["expired"]);
      expect((await report(b.url, id)).body.error.message).toMatch(/none came within 2 s/);
    }
  });

  it('keeps nothing in Redis for "report": false', async () => {
    const redis = new Redis(REDIS);
    try {
      const before = await redis.dbsize();
      for (let i = 0; i < 20; i++) await check(i % 2 ? a.url : b.url, 300 + i, { report: false });
      expect(await redis.dbsize()).toBe(before);
    } finally {
      redis.disconnect();
    }
  });
});

describe("approvals kept", () => {
  const approval = (i: number, user = "alice"): StoredApproval =>
    ({
      id: `apr_${i}`,
      call_id: `call-${i}`,
      status: "pending",
      tenant: "acme",
      user,
      email: null,
      agent: "bot",
      chain: ["bot"],
      tool: "issue_refund",
      args: { i },
      args_digest: `sha256:${i}`,
      rule: "big-refunds",
      reason: "refunds over 500 need a manager",
      created_at: new Date(1_700_000_000_000 + i).toISOString(),
      expires_at: new Date(1_700_000_900_000 + i).toISOString(),
      request: {
        principal: null,
        chain: ["bot"],
        tier: "interactive",
        tiers: ["interactive"],
        scopes: [],
        args: { i },
      },
    }) as unknown as StoredApproval;

  it("drops a requester's own oldest approval at their bound, never another's, in memory and in Redis", async () => {
    const bounds = { maxCalls: 10, maxApprovals: 10, maxCallsPerUser: 10, maxApprovalsPerUser: 2 };
    await inBothStores(bounds, "bounds-approvals-users:", async (store) => {
      await store.putApproval(approval(1, "bob"), "binding-1", 60_000);
      for (let i = 2; i <= 6; i++) await store.putApproval(approval(i, "mallory"), `binding-${i}`, 60_000);
      expect((await store.listApprovals(undefined)).map((a) => a.id)).toEqual(["apr_1", "apr_5", "apr_6"]);
      expect(await store.findApproval("binding-2")).toBeNull();
      expect(await store.getApproval("apr_1")).not.toBeNull();
    });
  });

  it("drops the oldest approval at the bound, in memory and in Redis", async () => {
    const bounds = { maxCalls: 10, maxApprovals: 2, maxCallsPerUser: 10, maxApprovalsPerUser: 10 };
    await inBothStores(bounds, "bounds-approvals:", async (store) => {
      for (let i = 1; i <= 3; i++) await store.putApproval(approval(i), `binding-${i}`, 60_000);
      expect(await store.getApproval("apr_1")).toBeNull();
      expect(await store.findApproval("binding-1")).toBeNull();
      expect((await store.listApprovals(undefined)).map((a) => a.id)).toEqual(["apr_2", "apr_3"]);
    });
  });
});

describe("console sessions kept", () => {
  const PER_OWNER = MAX_CONSOLE_SESSIONS_PER_OWNER;
  const bounds = { maxCalls: 10, maxApprovals: 10, maxCallsPerUser: 10, maxApprovalsPerUser: 10 };
  const live = async (store: StateStore, hashes: string[]) =>
    (await Promise.all(hashes.map((h) => store.getConsoleSession(h)))).map((s) => s !== null);

  it("ends an owner's own oldest session past their bound, never another's, in memory and in Redis", async () => {
    await inBothStores(bounds, "bounds-console:", async (store) => {
      await store.putConsoleSession("bob-1", '{"who":"bob"}', 60_000, "bob");
      const mallory = Array.from({ length: PER_OWNER + 2 }, (_, i) => `mallory-${i + 1}`);
      // all opened in the same millisecond: still the two opened first are the two ended
      const clock = vi.spyOn(Date, "now").mockReturnValue(1_800_000_000_000);
      try {
        for (const h of mallory) await store.putConsoleSession(h, `{"h":"${h}"}`, 60_000, "mallory");
      } finally {
        clock.mockRestore();
      }
      expect(await live(store, mallory)).toEqual([false, false, ...Array(PER_OWNER).fill(true)]);
      expect(await store.getConsoleSession("mallory-3")).toBe('{"h":"mallory-3"}');
      expect(await store.getConsoleSession("bob-1")).toBe('{"who":"bob"}');
      // a session signed out frees its place: the next one ends none (not even the oldest, mallory-3)
      await store.deleteConsoleSession("mallory-12");
      await store.putConsoleSession("mallory-13", "{}", 60_000, "mallory");
      expect(await live(store, ["mallory-3", "mallory-13"])).toEqual([true, true]);
    });
  });

  it("counts only an owner's sessions still open: expired ones end none that is, in memory and in Redis", async () => {
    await inBothStores(bounds, "bounds-console-expired:", async (store) => {
      await store.putConsoleSession("eve-first", "{}", 60_000, "eve");
      const short = Array.from({ length: PER_OWNER - 1 }, (_, i) => `short-${i}`);
      for (const h of short) await store.putConsoleSession(h, "{}", 30, "eve");
      await new Promise((r) => setTimeout(r, 80));
      // nine more: ten open with the first, which ends only if the nine expired ones still counted
      const next = Array.from({ length: PER_OWNER - 1 }, (_, i) => `next-${i}`);
      for (const h of next) await store.putConsoleSession(h, "{}", 60_000, "eve");
      expect(await live(store, ["eve-first", ...short, ...next])).toEqual([
        true,
        ...Array(PER_OWNER - 1).fill(false),
        ...Array(PER_OWNER - 1).fill(true),
      ]);
    });
  });

  it("refuses a session past the bound of the memory store with 429, and ends none already open", async () => {
    const store = createMemoryState(bounds);
    try {
      for (let i = 0; i < MAX_CONSOLE_SESSIONS; i++)
        await store.putConsoleSession(`s-${i}`, "{}", 60_000, `o-${i}`);
      const refused = await store
        .putConsoleSession("late", "{}", 60_000, "late")
        .catch((e: OnbehalfError) => e);
      expect(refused).toMatchObject({ code: "ERR_RATE_LIMITED", status: 429 });
      expect((refused as Error).message).toMatch(/holds 10000 console sessions.*sign in again once some end/);
      expect(await live(store, ["s-0", `s-${MAX_CONSOLE_SESSIONS - 1}`, "late"])).toEqual([
        true,
        true,
        false,
      ]);
      await store.deleteConsoleSession("s-0");
      await store.putConsoleSession("late", "{}", 60_000, "late");
      expect(await store.getConsoleSession("late")).toBe("{}");
    } finally {
      await store.close();
    }
  });
});
