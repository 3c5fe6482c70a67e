/**
 * Task-scoped capabilities through the control plane: RFC 9396 `authorization_details` at `POST /v1/token`,
 * signed into the delegation token, enforced by `POST /v1/check`; a child cannot widen, forge or drop them.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { digestCapabilities } from "../../src/audit/record.js";
import type { OnbehalfServer } from "../../src/server/app.js";
import { ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE } from "../../src/server/token-exchange.js";
import { type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { ADMIN, call, startTestServer, userToken } from "../support/server.js";

const TYPE = "urn:onbehalf:capabilities";
let idp: OidcProviderHandle;
let server: OnbehalfServer;
let alice: string;

beforeAll(async () => {
  idp = await startOidcProvider();
  server = await startTestServer(idp);
  alice = await userToken(idp, "alice", "customers:read orders:write email.read");
});
afterAll(async () => {
  await server?.close();
  await idp?.close();
});

const REFUNDS = {
  type: TYPE,
  tools: ["get_customer", { tool: "issue_refund", when: "args.order in task.orders && args.amount <= 50" }],
  data: { orders: ["o-1"] },
};

const exchange = (body: Record<string, unknown>) =>
  call(server.url, "POST", "/v1/token", {
    body: { grant_type: TOKEN_EXCHANGE, subject_token_type: ACCESS_TOKEN_TYPE, ...body },
  });
const check = (token: string, tool: string, args: Record<string, unknown>) =>
  call(server.url, "POST", "/v1/check", { token, body: { tool, args, agent: { name: "ignored" } } });
const claims = (jwt: string) => JSON.parse(Buffer.from(jwt.split(".")[1]!, "base64url").toString());

async function delegated(subject: string, actor: string, details?: unknown): Promise<string> {
  const r = await exchange({
    subject_token: subject,
    actor,
    ...(details === undefined ? {} : { authorization_details: details }),
  });
  expect(r.status).toBe(200);
  return r.body.access_token as string;
}

describe("authorization_details at POST /v1/token", () => {
  it("signs the capabilities into the delegation token and answers with what it carries", async () => {
    const r = await exchange({ subject_token: alice, actor: "refund-bot", authorization_details: [REFUNDS] });
    expect(r.status).toBe(200);
    const layer = {
      type: TYPE,
      agent: "refund-bot",
      tools: [{ tool: "get_customer" }, REFUNDS.tools[1]],
      data: REFUNDS.data,
    };
    expect(r.body.authorization_details).toEqual([layer]);
    expect(claims(r.body.access_token).authorization_details).toEqual([layer]);
  });

  it("takes them form-encoded too, as a JSON string (RFC 9396 §6)", async () => {
    const r = await call(server.url, "POST", "/v1/token", {
      raw: new URLSearchParams({
        grant_type: TOKEN_EXCHANGE,
        subject_token: alice,
        subject_token_type: ACCESS_TOKEN_TYPE,
        actor: "refund-bot",
        authorization_details: JSON.stringify([REFUNDS]),
      }).toString(),
      contentType: "application/x-www-form-urlencoded",
    });
    expect(r.status).toBe(200);
    expect(claims(r.body.access_token).authorization_details).toHaveLength(1);
  });

  it("refuses an unknown type, a malformed set or a condition that does not compile (invalid_authorization_details)", async () => {
    for (const details of [
      [{ type: "payment_initiation", actions: ["initiate"] }],
      [{ type: TYPE, tools: [{ tool: "issue_refund", when: "args.amount <" }] }],
      [{ type: TYPE, tools: [{ tool: "issue_refund", when: "argz.amount < 1" }] }],
      [{ type: TYPE, tools: "everything" }],
      [{ type: TYPE, tools: [], agent: "someone-else" }],
      "not json",
    ]) {
      const r = await exchange({ subject_token: alice, actor: "bot", authorization_details: details });
      expect(r.status, JSON.stringify(details)).toBe(400);
      expect(r.body.error).toBe("invalid_authorization_details");
      expect(r.body.error_description).toMatch(/authorization_details/);
    }
  });
});

describe("POST /v1/check under a delegation token's capabilities", () => {
  it("allows what they grant and denies the rest with capability_deny, with the set's digest in the answer and the audit", async () => {
    const token = await delegated(alice, "refund-bot", [REFUNDS]);
    const ok = await check(token, "issue_refund", { order: "o-1", amount: 20 });
    expect(ok.body).toMatchObject({ decision: "allow", reason_code: "ok", chain: ["refund-bot"] });
    const layers = [
      { agent: "refund-bot", tools: [{ tool: "get_customer" }, REFUNDS.tools[1]], data: REFUNDS.data },
    ];
    expect(ok.body.capabilities).toBe(digestCapabilities(layers));
    const other = await check(token, "issue_refund", { order: "o-2", amount: 20 });
    expect(other.body).toMatchObject({ decision: "deny", reason_code: "capability_deny" });
    const tool = await check(token, "read_email", {});
    expect(tool.body).toMatchObject({ decision: "deny", reason_code: "capability_deny" });
    expect(tool.body.reason).toMatch(/read_email is not among the capabilities of refund-bot/);
    await server.governor.flush();
    const records = (
      await call(server.url, "GET", `/v1/audit?user=alice&agent=refund-bot&limit=50`, { token: ADMIN })
    ).body.records as { kind: string; capabilities?: string; reason_code: string; tool: string | null }[];
    const attempts = records.filter((r) => r.kind === "attempt");
    expect(attempts.length).toBeGreaterThanOrEqual(3);
    for (const r of attempts) expect(r.capabilities).toBe(digestCapabilities(layers));
    const delegation = records.find((r) => r.kind === "delegation");
    expect(delegation?.capabilities).toMatch(/^sha256:/);
  });

  it("a child cannot widen: its authorization_details are added to the parent's, never put in their place", async () => {
    const parent = await delegated(alice, "refund-bot", [REFUNDS]);
    const wider = {
      type: TYPE,
      tools: ["read_email", "get_customer", { tool: "issue_refund", when: "true" }],
    };
    const child = await delegated(parent, "helper", [wider]);
    expect(claims(child).authorization_details).toHaveLength(2);
    expect((await check(child, "read_email", {})).body.reason_code).toBe("capability_deny");
    expect((await check(child, "issue_refund", { order: "o-9", amount: 1 })).body.reason_code).toBe(
      "capability_deny",
    );
    expect((await check(child, "issue_refund", { order: "o-1", amount: 1 })).body.decision).toBe("allow");
    // a child that states none keeps the parent's
    const plain = await delegated(parent, "plain-helper");
    expect(claims(plain).authorization_details).toHaveLength(1);
    expect((await check(plain, "read_email", {})).body.reason_code).toBe("capability_deny");
  });

  it("a token whose authorization_details were edited or stripped is refused (401), not trusted", async () => {
    const token = await delegated(alice, "refund-bot", [REFUNDS]);
    const [h, p, s] = token.split(".");
    const payload = claims(token);
    for (const forged of [
      { ...payload, authorization_details: undefined },
      { ...payload, authorization_details: [{ ...payload.authorization_details[0], tools: ["read_email"] }] },
    ]) {
      const edited = `${h}.${Buffer.from(JSON.stringify(forged)).toString("base64url")}.${s}`;
      const r = await check(edited, "read_email", {});
      expect(r.status).toBe(401);
      expect(r.body.reason_code ?? r.body.error?.code).toMatch(/unauthenticated|ERR_TOKEN/);
    }
    // and an exchange from a forged subject is refused too
    const forged = `${h}.${Buffer.from(JSON.stringify({ ...payload, authorization_details: [] })).toString("base64url")}.${s}`;
    // (an unacceptable subject token is an OAuth invalid_request, RFC 8693 §2.2.2)
    expect((await exchange({ subject_token: forged, actor: "x" })).body).toMatchObject({
      error: "invalid_request",
      error_description: expect.stringMatching(/^the subject_token is not acceptable/),
    });
    expect(p).toBeDefined();
  });

  it("decides before the tenant's rules: outside them, no approval is opened; an approved call is decided again under them at its report", async () => {
    // the grant holds for three seconds: long enough to ask, approve and run; over by the report
    const until = new Date(Date.now() + 3_000).toISOString();
    const caps = {
      type: TYPE,
      tools: [{ tool: "issue_refund", when: `args.amount <= 1000 && now < timestamp('${until}')` }],
    };
    const token = await delegated(alice, "refund-bot", [caps]);
    const outside = await check(token, "issue_refund", { order: "o-1", amount: 2000 });
    expect(outside.body).toMatchObject({ decision: "deny", reason_code: "capability_deny" });
    expect(outside.body.approval).toBeUndefined();
    const asked = await check(token, "issue_refund", { order: "o-1", amount: 900 });
    expect(asked.body).toMatchObject({ decision: "ask", rule: "big-refunds" });
    const id = asked.body.approval.id as string;
    const approved = await call(server.url, "POST", `/v1/approvals/${id}`, {
      token: ADMIN,
      body: { decision: "approve" },
    });
    expect(approved.status).toBe(200);
    const again = await call(server.url, "POST", "/v1/check", {
      token,
      body: { tool: "issue_refund", args: { order: "o-1", amount: 900 }, agent: { name: "x" }, approval: id },
    });
    expect(again.body).toMatchObject({ decision: "allow", capabilities: expect.stringMatching(/^sha256:/) });
    await new Promise((r) => setTimeout(r, Math.max(0, Date.parse(until) - Date.now() + 200)));
    const reported = await call(server.url, "POST", `/v1/calls/${again.body.call_id}/result`, {
      token,
      body: { status: "ok", output: { refunded: 900 } },
    });
    expect(reported.status).toBe(403);
    expect(reported.body.error.message).toMatch(/capability_deny|outside the capabilities/);
  });

  it("the check body cannot carry capabilities of its own", async () => {
    const token = await delegated(alice, "refund-bot", [REFUNDS]);
    const r = await call(server.url, "POST", "/v1/check", {
      token,
      body: { tool: "read_email", args: {}, agent: { name: "x" }, capabilities: { tools: ["read_email"] } },
    });
    expect(r.status).toBe(400);
  });
});
