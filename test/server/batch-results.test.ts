/**
 * `POST /v1/calls/results`: many results in one request, each judged as `/v1/calls/{id}/result` would judge it alone
 * under the same bearer, and answered on its own (its status, and the answer or the error): a batch cannot report a
 * call its bearer could not report singly (another user's, another tenant's), a bad item costs the others nothing,
 * a batch over the bound is refused whole, and a call nothing waits for any more is a 404 item saying why.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { OnbehalfServer } from "../../src/server/app.js";
import { MAX_BATCH_RESULTS } from "../../src/server/check.js";
import { type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { ACME_POLICY, ADMIN, call, serverConfig, startTestServer, userToken } from "../support/server.js";

let idp: OidcProviderHandle;
let server: OnbehalfServer;
let alice: string;
let bob: string;
/** alice of tenant globex: the same subject, another tenant. */
let aliceGlobex: string;

/** issue_refund's output is not transformed (post_transform audit); get_customer's is redacted (ACME_POLICY). */
const POLICY = { ...ACME_POLICY, tools: { issue_refund: { "*": { permission: "allow" as const } } } };

beforeAll(async () => {
  idp = await startOidcProvider();
  server = await startTestServer(idp, {
    tenants: [
      { id: "acme", policy: POLICY },
      { id: "globex", policy: POLICY },
    ],
  });
  alice = await userToken(idp, "alice");
  bob = await userToken(idp, "bob");
  aliceGlobex = await userToken(idp, "alice", undefined, { tenant: "globex", email: "alice@globex.test" });
});
afterAll(async () => {
  await server?.close();
  await idp?.close();
});

const check = async (url: string, token: string, tool: string, args: Record<string, unknown>, more = {}) => {
  const r = await call(url, "POST", "/v1/check", {
    token,
    body: { tool, args, agent: { name: "bot" }, ...more },
  });
  expect(r.status).toBe(200);
  return r.body as { call_id: string; decision: string; report_token?: string };
};
/** A refund of 5: allowed, its output not transformed. */
const refund = (token: string, order: string, more = {}) =>
  check(server.url, token, "issue_refund", { order, amount: 5 }, more);
const batch = (url: string, token: string | undefined, results: unknown) =>
  call(url, "POST", "/v1/calls/results", { ...(token === undefined ? {} : { token }), body: { results } });
const single = (url: string, token: string, id: string, body: unknown = { status: "ok", output: 1 }) =>
  call(url, "POST", `/v1/calls/${id}/result`, { token, body });
// biome-ignore lint/suspicious/noExplicitAny: audit records are read field by field
const outcomesOf = async (url: string, user: string, ids: readonly string[]): Promise<any[]> => {
  await server.governor.flush();
  const records = (await call(url, "GET", `/v1/audit?user=${user}&limit=1000`, { token: ADMIN })).body
    .records;
  return records.filter(
    (r: { kind: string; call_id: string }) => r.kind === "outcome" && ids.includes(r.call_id),
  );
};

describe("POST /v1/calls/results", () => {
  it("answers each item as /v1/calls/{id}/result would: outputs redacted or passed, errors on their own", async () => {
    const redacted = await check(server.url, alice, "get_customer", { id: "c-1" });
    const passed = await refund(alice, "o-1");
    const failed = await refund(alice, "o-2");
    const tokenCall = await refund(alice, "o-3", { report: "token" });
    const asked = await check(server.url, alice, "issue_refund", { order: "o-4", amount: 501 });
    expect(asked.decision).toBe("ask");
    const unknown = "01a2247d-0000-7000-8000-000000000000";
    const r = await batch(server.url, alice, [
      { call_id: redacted.call_id, status: "ok", output: { id: "c-1", ssn: "078-05-1120" } },
      { call_id: passed.call_id, status: "ok" },
      { call_id: failed.call_id, status: "error", error: "backend down" },
      { call_id: unknown, status: "ok" },
      { call_id: passed.call_id, status: "maybe" }, // malformed: refused alone, before it is looked up
      { status: "ok" }, // no call id
      { call_id: tokenCall.call_id, status: "ok", report_token: tokenCall.report_token },
      { call_id: asked.call_id, status: "ok" }, // asked, never approved: not run, so not reportable
    ]);
    expect(r.status).toBe(200);
    expect(r.body.results).toHaveLength(8);
    const [a, b, c, d, e, f, g, h] = r.body.results;
    expect(a).toEqual({
      call_id: redacted.call_id,
      status: 200,
      action: "redact",
      output: { id: "c-1", ssn: "[REDACTED]" },
    });
    expect(b).toEqual({ call_id: passed.call_id, status: 200, action: "pass", output: null });
    expect(c).toMatchObject({ call_id: failed.call_id, status: 200, action: "pass" });
    expect(d).toMatchObject({ call_id: unknown, status: 404, error: { code: "ERR_NOT_FOUND" } });
    expect(d.error.message).toMatch(/no call .* is waiting for a result/);
    expect(e).toMatchObject({
      call_id: passed.call_id,
      status: 400,
      error: { code: "ERR_INVALID_ARGUMENT" },
    });
    expect(e.error.message).toMatch(/^invalid result: status:/);
    expect(f).toMatchObject({ call_id: null, status: 400, error: { code: "ERR_INVALID_ARGUMENT" } });
    expect(f.error.message).toMatch(/call_id/);
    expect(g).toMatchObject({ call_id: tokenCall.call_id, status: 200, action: "pass" });
    expect(h).toMatchObject({
      call_id: asked.call_id,
      status: 403,
      error: { code: "ERR_APPROVAL_REQUIRED" },
    });
    // each result taken is audited once, with its outcome
    const ids = [redacted, passed, failed, tokenCall].map((x) => x.call_id);
    const outcomes = await outcomesOf(server.url, "alice", ids);
    expect(Object.fromEntries(outcomes.map((o) => [o.call_id, o.outcome]))).toEqual({
      [redacted.call_id]: "ok",
      [passed.call_id]: "ok",
      [failed.call_id]: "error",
      [tokenCall.call_id]: "ok",
    });
    expect(outcomes.find((o) => o.call_id === failed.call_id).reason).toMatch(/backend down/);
    // taken once: again, singly or in a batch, it is refused as the single route refuses it
    expect((await single(server.url, alice, passed.call_id)).status).toBe(404);
    const again = await batch(server.url, alice, [
      { call_id: tokenCall.call_id, status: "ok", report_token: tokenCall.report_token },
    ]);
    expect(again.body.results[0]).toMatchObject({ status: 409, error: { code: "ERR_CONFLICT" } });
  });

  it("takes the same call once when a batch names it twice", async () => {
    const x = await refund(alice, "o-5");
    const r = await batch(server.url, alice, [
      { call_id: x.call_id, status: "ok" },
      { call_id: x.call_id, status: "error", error: "again" },
    ]);
    // taken concurrently: the other finds it gone (404) or being taken (409 reported already)
    const [taken, refused] = [...r.body.results].sort(
      (p: { status: number }, q: { status: number }) => p.status - q.status,
    );
    expect(taken.status).toBe(200);
    expect([404, 409]).toContain(refused.status);
    expect(await outcomesOf(server.url, "alice", [x.call_id])).toHaveLength(1);
  });

  it("never lets a bearer report a call it could not report singly: another user's, another tenant's", async () => {
    const mine = await refund(bob, "o-6");
    const alices = await refund(alice, "o-7");
    const alicesByToken = await refund(alice, "o-8", { report: "token" });
    const globex = await refund(aliceGlobex, "o-9");
    const r = await batch(server.url, bob, [
      { call_id: alices.call_id, status: "ok" },
      { call_id: mine.call_id, status: "ok" },
      { call_id: alicesByToken.call_id, status: "ok", report_token: alicesByToken.report_token },
    ]);
    expect(r.body.results.map((i: { status: number }) => i.status)).toEqual([403, 200, 403]);
    expect(r.body.results[0].error).toEqual({
      code: "ERR_POLICY_DENIED",
      message: "this call belongs to another user",
    });
    // the same subject in another tenant is another user
    const cross = await batch(server.url, aliceGlobex, [{ call_id: alices.call_id, status: "ok" }]);
    expect(cross.body.results[0]).toMatchObject({ status: 403, error: { code: "ERR_POLICY_DENIED" } });
    const back = await batch(server.url, alice, [{ call_id: globex.call_id, status: "ok" }]);
    expect(back.body.results[0]).toMatchObject({ status: 403, error: { code: "ERR_POLICY_DENIED" } });
    // a refused item took nothing: its owner still reports it
    const owner = await batch(server.url, alice, [
      { call_id: alices.call_id, status: "ok" },
      { call_id: alicesByToken.call_id, status: "ok", report_token: alicesByToken.report_token },
    ]);
    expect(owner.body.results.map((i: { status: number }) => i.status)).toEqual([200, 200]);
    expect(
      (await batch(server.url, aliceGlobex, [{ call_id: globex.call_id, status: "ok" }])).body.results[0]
        .status,
    ).toBe(200);
    expect(await outcomesOf(server.url, "bob", [alices.call_id, alicesByToken.call_id])).toEqual([]);
  });

  it("authenticates the request as the single route does: no token or a bad one is a 401 for the whole batch", async () => {
    const x = await refund(alice, "o-10");
    const none = await batch(server.url, undefined, [{ call_id: x.call_id, status: "ok" }]);
    expect(none.status).toBe(401);
    const bad = await batch(server.url, "not-a-token", [{ call_id: x.call_id, status: "ok" }]);
    expect(bad.status).toBe(401);
    expect(bad.headers.get("www-authenticate")).toMatch(/invalid_token/);
    expect((await single(server.url, alice, x.call_id)).status).toBe(200); // it still waited
  });

  it("refuses a batch over the bound, or not a list, whole (400, nothing taken); an empty one answers nothing", async () => {
    const x = await refund(alice, "o-11");
    const items = Array.from({ length: MAX_BATCH_RESULTS + 1 }, () => ({ call_id: x.call_id, status: "ok" }));
    const over = await batch(server.url, alice, items);
    expect(over.status).toBe(400);
    expect(over.body.error.code).toBe("ERR_INVALID_ARGUMENT");
    expect(over.body.error.message).toMatch(
      new RegExp(`at most ${MAX_BATCH_RESULTS} results, this one ${MAX_BATCH_RESULTS + 1}; send the rest`),
    );
    expect((await batch(server.url, alice, { call_id: x.call_id })).status).toBe(400);
    const extra = await call(server.url, "POST", "/v1/calls/results", {
      token: alice,
      body: { results: [], more: 1 },
    });
    expect(extra.status).toBe(400);
    expect(await batch(server.url, alice, [])).toMatchObject({ status: 200, body: { results: [] } });
    // exactly at the bound is taken (the one real call once, the others refused as already reported)
    const full = await batch(server.url, alice, items.slice(1));
    expect(full.status).toBe(200);
    expect(full.body.results.filter((i: { status: number }) => i.status === 200)).toHaveLength(1);
  });
});

describe("POST /v1/calls/results for calls nothing waits for any more", () => {
  let bounded: OnbehalfServer;
  beforeAll(async () => {
    const base = serverConfig(idp);
    bounded = await startTestServer(idp, {
      server: { ...base.server, max_pending_calls: 3, pending_call_seconds: 60 },
      tenants: [{ id: "acme", policy: POLICY }],
    });
  });
  afterAll(async () => {
    await bounded?.close();
  });

  it("answers an evicted call's item 404 saying why, and takes the others", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++)
      ids.push((await check(bounded.url, alice, "issue_refund", { order: `e-${i}`, amount: 5 })).call_id);
    // 3 may wait: the two oldest were evicted, their outcome audited as expired
    await vi.waitFor(async () => {
      const records = (await call(bounded.url, "GET", "/v1/audit?user=alice&limit=100", { token: ADMIN }))
        .body.records;
      expect(records.filter((r: { outcome: string }) => r.outcome === "expired")).toHaveLength(2);
    });
    const r = await batch(
      bounded.url,
      alice,
      ids.map((call_id) => ({ call_id, status: "ok" })),
    );
    expect(r.body.results.map((i: { status: number }) => i.status)).toEqual([404, 404, 200, 200, 200]);
    for (const item of r.body.results.slice(0, 2)) {
      expect(item.error.code).toBe("ERR_NOT_FOUND");
      expect(item.error.message).toMatch(/evicted unreported when more than 3 calls were waiting/);
    }
  });
});
