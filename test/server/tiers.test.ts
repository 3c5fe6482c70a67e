/**
 * Tiers along a chain, and one trace per run, through the control plane: a delegation may move to another tier,
 * and each call is decided under every tier of its chain (strictest wins), so a hop only ever narrows.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { OnbehalfServer } from "../../src/server/app.js";
import { ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE } from "../../src/server/token-exchange.js";
import { type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { ADMIN, call, startTestServer, userToken } from "../support/server.js";

let idp: OidcProviderHandle;
let server: OnbehalfServer;
let alice: string;

/** Per tier: interactive may do everything; sub-agents ask for refunds and see customers redacted; background jobs never refund. */
const TIERED = {
  defaults: {
    interactive: { permission: "allow" as const, rate_limit_per_minute: 100 },
    subagent: { permission: "allow" as const, rate_limit_per_minute: 3 },
    background: { permission: "allow" as const },
  },
  tools: {
    issue_refund: { subagent: { permission: "ask" as const }, background: { permission: "deny" as const } },
    get_customer: { subagent: { post_transform: "redact" as const } },
  },
};

beforeAll(async () => {
  idp = await startOidcProvider();
  server = await startTestServer(idp, { tenants: [{ id: "acme", policy: TIERED }] });
  alice = await userToken(idp, "alice", "customers:read orders:write email.read");
});
afterAll(async () => {
  await server?.close();
  await idp?.close();
});

async function delegate(subject: string, actor: string, tier: string, extra: Record<string, string> = {}) {
  const r = await call(server.url, "POST", "/v1/token", {
    body: {
      grant_type: TOKEN_EXCHANGE,
      subject_token: subject,
      subject_token_type: ACCESS_TOKEN_TYPE,
      actor,
      tier,
      ...extra,
    },
  });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body as { access_token: string; trace_id: string };
}

// biome-ignore lint/suspicious/noExplicitAny: tests read response bodies field by field
type Json = any;

const check = (
  token: string,
  tool: string,
  args: unknown = {},
  headers?: Record<string, string>,
): Promise<{ status: number; body: Json }> =>
  fetch(`${server.url}/v1/check`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...headers },
    body: JSON.stringify({ tool, args, agent: { name: "ignored-for-delegations" } }),
  }).then(async (r) => ({ status: r.status, body: await r.json() }));

describe("tiers along a chain", () => {
  it("decides a three-hop chain interactive → subagent → background under all three, recorded with one trace id", async () => {
    const orchestrator = await delegate(alice, "orchestrator", "interactive", {
      trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
    });
    const worker = await delegate(orchestrator.access_token, "worker", "subagent");
    const batch = await delegate(worker.access_token, "batch", "background");
    expect([orchestrator.trace_id, worker.trace_id, batch.trace_id]).toEqual([
      "4bf92f3577b34da6a3ce929d0e0e4736",
      "4bf92f3577b34da6a3ce929d0e0e4736",
      "4bf92f3577b34da6a3ce929d0e0e4736",
    ]);

    // The orchestrator alone: interactive allows the refund.
    expect((await check(orchestrator.access_token, "issue_refund", { amount: 10 })).body).toMatchObject({
      decision: "allow",
    });
    // The worker: interactive allows, subagent asks; ask wins.
    const asked = (await check(worker.access_token, "issue_refund", { amount: 10 })).body;
    expect(asked).toMatchObject({ decision: "ask", reason_code: "approval_required" });
    expect(asked.reason).toBe("approval required by tools.issue_refund.subagent");
    // The batch job: background denies; deny wins over the ask and the allow before it.
    const denied = (await check(batch.access_token, "issue_refund", { amount: 10 })).body;
    expect(denied).toMatchObject({ decision: "deny", reason_code: "permission_deny" });
    expect(denied.reason).toBe("denied by tools.issue_refund.background");
    // Background allows customers, but the subagent hop before it redacts them: the strictest transform holds.
    const read = (await check(batch.access_token, "get_customer", { id: "c-1" })).body;
    expect(read).toMatchObject({
      decision: "allow",
      post_transform: "redact",
      chain: ["orchestrator", "worker", "batch"],
    });
    expect(read.trace_id).toBe("4bf92f3577b34da6a3ce929d0e0e4736");

    // One run, one trace: the delegations and every call are found by it.
    const records = (
      await call(server.url, "GET", "/v1/audit?trace=4bf92f3577b34da6a3ce929d0e0e4736&limit=100", {
        token: ADMIN,
      })
    ).body.records as { kind: string; agent: string; decision: string; tool: string | null }[];
    expect(records.map((r) => `${r.kind}:${r.agent}:${r.tool ?? "-"}:${r.decision}`).reverse()).toEqual([
      "delegation:orchestrator:-:allow",
      "delegation:worker:-:allow",
      "delegation:batch:-:allow",
      "attempt:orchestrator:issue_refund:allow",
      "attempt:worker:issue_refund:ask",
      "attempt:batch:issue_refund:deny",
      "attempt:batch:get_customer:allow",
    ]);
  });

  it("lets no hop widen: a sub-agent that delegates back to interactive still asks, and counts in both tiers' limits", async () => {
    const bob = await userToken(idp, "bob", "customers:read orders:write");
    const worker = await delegate(bob, "worker", "subagent");
    const escalated = await delegate(worker.access_token, "helper", "interactive");
    const asked = (await check(escalated.access_token, "issue_refund", { amount: 5 })).body;
    expect(asked).toMatchObject({ decision: "ask" });
    expect(asked.reason).toBe(
      "approval required by tools.issue_refund.subagent (under tier subagent, of the chain)",
    );
    // The subagent limit (3 a minute) binds the interactive helper too (the two asks above and below count).
    const answers = [];
    for (let i = 0; i < 3; i++)
      answers.push((await check(escalated.access_token, "get_customer", { id: "c-2" })).body);
    expect(answers.map((a) => a.decision)).toEqual(["allow", "allow", "deny"]);
    expect(answers[2]).toMatchObject({ reason_code: "rate_limited" });
    expect(answers[2].reason).toContain("subagent");
  });

  it("takes a run's trace from traceparent, else makes one, and keeps a delegation token's", async () => {
    const traced = await check(
      alice,
      "get_customer",
      { id: "c-3" },
      {
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      },
    );
    expect(traced.body.trace_id).toBe("0af7651916cd43dd8448eb211c80319c");
    const fresh = await check(alice, "get_customer", { id: "c-3" });
    expect(fresh.body.trace_id).toMatch(/^[0-9a-f]{32}$/);
    expect(fresh.body.trace_id).not.toBe(traced.body.trace_id);
    // An invalid traceparent (all-zero trace id) is ignored, as W3C Trace Context says.
    const invalid = await check(
      alice,
      "get_customer",
      { id: "c-3" },
      {
        traceparent: "00-00000000000000000000000000000000-b7ad6b7169203331-01",
      },
    );
    expect(invalid.body.trace_id).toMatch(/^[0-9a-f]{32}$/);
    expect(invalid.body.trace_id).not.toBe("00000000000000000000000000000000");
    // A delegation minted under a traceparent keeps that trace for every call made with it.
    const r = await fetch(`${server.url}/v1/token`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        traceparent: "00-11111111111111111111111111111111-2222222222222222-01",
      },
      body: JSON.stringify({
        grant_type: TOKEN_EXCHANGE,
        subject_token: alice,
        subject_token_type: ACCESS_TOKEN_TYPE,
        actor: "w",
      }),
    }).then((x) => x.json() as Promise<Json>);
    expect((await check(r.access_token, "get_customer", { id: "c-3" })).body.trace_id).toBe(
      "11111111111111111111111111111111",
    );
    // An anonymous attempt is audited under a trace of its own too.
    const anon = await fetch(`${server.url}/v1/check`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        traceparent: "00-33333333333333333333333333333333-2222222222222222-01",
      },
      body: JSON.stringify({ tool: "get_customer", args: {}, agent: { name: "bot" } }),
    });
    expect(anon.status).toBe(401);
    const found = (
      await call(server.url, "GET", "/v1/audit?trace=33333333333333333333333333333333", { token: ADMIN })
    ).body.records;
    expect(found).toMatchObject([{ user: null, reason_code: "unauthenticated" }]);
  });
});

describe("the first hop from a human's own token", () => {
  it("signs the tier of the agent holding the token (subject_tier), which only a human's own token may name", async () => {
    const r = await call(server.url, "POST", "/v1/token", {
      body: {
        grant_type: TOKEN_EXCHANGE,
        subject_token: alice,
        subject_token_type: ACCESS_TOKEN_TYPE,
        subject_actor: "triage",
        subject_tier: "interactive",
        actor: "worker",
        tier: "subagent",
      },
    });
    expect(r.status).toBe(200);
    const claims = JSON.parse(Buffer.from(r.body.access_token.split(".")[1], "base64url").toString());
    expect(claims).toMatchObject({ tiers: ["interactive", "subagent"], tier: "subagent" });
    const again = await call(server.url, "POST", "/v1/token", {
      body: {
        grant_type: TOKEN_EXCHANGE,
        subject_token: r.body.access_token,
        subject_token_type: ACCESS_TOKEN_TYPE,
        subject_tier: "interactive",
        actor: "x",
      },
    });
    expect(again.status).toBe(400);
    expect(again.body.error_description).toMatch(/subject_tier are only for a user's own token/);
  });
});

describe("refusals a client makes on its own", () => {
  it("names the refused agent after a delegation token's signed chain, with no layer", async () => {
    const triage = await delegate(alice, "triage", "interactive");
    const r = await check(triage.access_token, "get_customer", { id: "c-5" });
    expect(r.body.decision).toBe("allow");
    const refused = await call(server.url, "POST", "/v1/check", {
      token: triage.access_token,
      body: {
        tool: "get_customer",
        args: { id: "c-5" },
        agent: { name: "auditor", tier: "subagent" },
        client_refusal: { reason_code: "missing_scope", reason: "the hand-off to auditor was refused" },
      },
    });
    expect(refused.body).toMatchObject({
      decision: "deny",
      reason_code: "missing_scope",
      chain: ["triage", "auditor"],
      layer: null,
      trace_id: triage.trace_id,
    });
  });

  it("audits a client's refusal as a deny with its code, never an allow", async () => {
    const r = await call(server.url, "POST", "/v1/check", {
      token: alice,
      body: {
        tool: "get_customer",
        args: { id: "c-4" },
        agent: { name: "mailer" },
        client_refusal: { reason_code: "missing_scope", reason: "the hand-off to mailer was refused" },
      },
    });
    // get_customer is allowed to alice: the client's refusal still wins.
    expect(r.body).toMatchObject({ decision: "deny", reason_code: "missing_scope" });
    expect(r.body.reason).toBe("refused by the client: the hand-off to mailer was refused");
    const [record] = (await call(server.url, "GET", `/v1/audit?agent=mailer&limit=1`, { token: ADMIN })).body
      .records;
    expect(record).toMatchObject({
      user: "alice",
      decision: "deny",
      reason_code: "missing_scope",
      agent: "mailer",
    });
    // A refusal cannot claim an allow.
    for (const code of ["ok", "fail_open"]) {
      const bad = await call(server.url, "POST", "/v1/check", {
        token: alice,
        body: {
          tool: "get_customer",
          agent: { name: "mailer" },
          client_refusal: { reason_code: code, reason: "x" },
        },
      });
      expect(bad.status).toBe(400);
    }
    // A client's own refusal is an answer whatever its code: fail_closed too (a 503 would read as an outage).
    const own = await call(server.url, "POST", "/v1/check", {
      token: alice,
      body: {
        tool: "get_customer",
        agent: { name: "mailer" },
        client_refusal: { reason_code: "fail_closed", reason: "its hand-off could not be decided" },
      },
    });
    expect([own.status, own.body.decision, own.body.reason_code]).toEqual([200, "deny", "fail_closed"]);
  });
});
