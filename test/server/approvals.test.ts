/** Approvals end to end: ask → a human decides → the call proceeds once, or is refused; every step audited. */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { OnbehalfServer } from "../../src/server/app.js";
import { type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { ADMIN, call, startTestServer, userToken } from "../support/server.js";

let idp: OidcProviderHandle;
let server: OnbehalfServer;
let alice: string;
let manager: string;

beforeAll(async () => {
  idp = await startOidcProvider({
    scopes: ["customers:read", "orders:write", "email.read", "onbehalf:approve"],
  });
  server = await startTestServer(idp, {}, { approvalTtlSeconds: 2 });
  alice = await userToken(idp, "alice", "orders:write onbehalf:approve");
  manager = await userToken(idp, "mona", "onbehalf:approve");
});
afterAll(async () => {
  await server?.close();
  await idp?.close();
});

async function askRefund(amount = 900) {
  const r = await call(server.url, "POST", "/v1/check", {
    token: alice,
    body: { tool: "issue_refund", args: { order: "o-1", amount }, agent: { name: "bot" } },
  });
  expect(r.body).toMatchObject({ decision: "ask", reason_code: "approval_required", rule: "big-refunds" });
  return r.body as { call_id: string; approval: { id: string; status: string; url: string } };
}
const result = (callId: string) =>
  call(server.url, "POST", `/v1/calls/${callId}/result`, {
    token: alice,
    body: { status: "ok", output: { refunded: 900 } },
  });
const decide = (token: string, id: string, decision: string, note?: string) =>
  call(server.url, "POST", `/v1/approvals/${id}`, { token, body: { decision, ...(note ? { note } : {}) } });

describe("approvals", () => {
  it("holds an asked call until an approver approves it, then lets it proceed exactly once", async () => {
    const asked = await askRefund();
    expect(asked.approval.status).toBe("pending");
    expect((await result(asked.call_id)).body.error.code).toBe("ERR_APPROVAL_REQUIRED");
    const list = await call(server.url, "GET", "/v1/approvals?status=pending", { token: manager });
    expect(list.body.approvals.map((a: { id: string }) => a.id)).toContain(asked.approval.id);
    expect((await decide(alice, asked.approval.id, "approve")).body.error.message).toBe(
      "nobody approves their own request",
    );
    // the client long-polls while the manager decides
    const poll = call(server.url, "GET", `${asked.approval.url}?wait=5`, { token: alice });
    await new Promise((r) => setTimeout(r, 150));
    const decided = await decide(manager, asked.approval.id, "approve", "ok, known customer");
    expect(decided.body).toMatchObject({
      status: "approved",
      decided_by: "mona",
      note: "ok, known customer",
    });
    expect((await poll).body.status).toBe("approved");
    expect((await decide(manager, asked.approval.id, "deny")).status).toBe(409);
    const first = await result(asked.call_id);
    expect(first.body).toMatchObject({ action: "pass", output: { refunded: 900 } });
    expect((await result(asked.call_id)).status).toBe(404);
    await server.governor.flush();
    const trail = (
      await call(server.url, "GET", "/v1/audit?user=alice&tool=issue_refund&limit=50", { token: ADMIN })
    ).body.records
      .filter((r: { call_id: string }) => r.call_id === asked.call_id)
      .map(
        (r: { kind: string; decision: string; reason_code: string }) =>
          `${r.kind}:${r.decision}:${r.reason_code}`,
      );
    expect(trail).toEqual(["outcome:allow:ok", "approval:allow:ok", "attempt:ask:approval_required"]);
  });

  it("refuses the result of a denied call, and audits approval_denied", async () => {
    const asked = await askRefund();
    await decide(ADMIN, asked.approval.id, "deny", "not this one");
    const r = await result(asked.call_id);
    expect(r.status).toBe(403);
    expect(r.body.error.message).toBe("approval_denied: denied by admin: not this one");
    await server.governor.flush();
    const records = (await call(server.url, "GET", "/v1/audit?user=alice&decision=deny", { token: ADMIN }))
      .body.records;
    expect(
      records
        .filter((x: { call_id: string }) => x.call_id === asked.call_id)
        .map((x: { kind: string; reason_code: string }) => [x.kind, x.reason_code]),
    ).toEqual([
      ["outcome", "approval_denied"],
      ["approval", "approval_denied"],
    ]);
  });

  it("expires approvals nobody decides, and refuses their calls with approval_expired", async () => {
    const asked = await askRefund();
    await new Promise((r) => setTimeout(r, 2_200));
    expect((await call(server.url, "GET", asked.approval.url, { token: alice })).body.status).toBe("expired");
    expect((await decide(manager, asked.approval.id, "approve")).status).toBe(409);
    const r = await result(asked.call_id);
    expect(r.body.error.message).toMatch(/^approval_expired/);
  });

  it("shows an approval only to its requester, approvers of its tenant and admins", async () => {
    const asked = await askRefund();
    const stranger = await userToken(idp, "sam", "customers:read");
    expect((await call(server.url, "GET", asked.approval.url, { token: stranger })).status).toBe(403);
    const otherTenant = await userToken(idp, "otto", "onbehalf:approve", { tenant: "globex" });
    expect((await decide(otherTenant, asked.approval.id, "approve")).status).toBe(403);
    expect((await call(server.url, "GET", asked.approval.url, { token: manager })).status).toBe(200);
  });
});
