/** Approvals end to end: ask → a human decides → the call proceeds once, or is refused; every step audited. */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { OnbehalfServer } from "../../src/server/app.js";
import { type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { startOwnRedis } from "../support/redis-server.js";
import { ACME_POLICY, ADMIN, call, startTestServer, userToken } from "../support/server.js";

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

const recheck = (approval: string, amount = 900, token = alice) =>
  call(server.url, "POST", "/v1/check", {
    token,
    body: { tool: "issue_refund", args: { order: "o-1", amount }, agent: { name: "bot" }, approval },
  });
const trailOf = async (callId: string) =>
  (
    await call(server.url, "GET", "/v1/audit?user=alice&tool=issue_refund&limit=200", { token: ADMIN })
  ).body.records
    .filter((r: { call_id: string }) => r.call_id === callId)
    .map(
      (r: { kind: string; decision: string; reason_code: string }) =>
        `${r.kind}:${r.decision}:${r.reason_code}`,
    );

describe("approvals", () => {
  it("holds an asked call until an approver approves it; asked again with its approval, it proceeds exactly once", async () => {
    const asked = await askRefund();
    expect(asked.approval.status).toBe("pending");
    expect((await result(asked.call_id)).body.error.code).toBe("ERR_APPROVAL_REQUIRED");
    const list = await call(server.url, "GET", "/v1/approvals?status=pending", { token: manager });
    expect(list.body.approvals.map((a: { id: string }) => a.id)).toContain(asked.approval.id);
    expect(list.body.approvals[0]).not.toHaveProperty("request"); // what is kept to decide it again stays inside
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
    // Approved is not run: the call is asked again with its approval, and decided under the policy in force.
    expect((await result(asked.call_id)).body.error.message).toMatch(/must be asked again with its approval/);
    const again = await recheck(asked.approval.id);
    expect(again.body).toMatchObject({ call_id: asked.call_id, decision: "allow", reason_code: "ok" });
    expect(again.body.reason).toMatch(/^approved by mona \(apr_/);
    const first = await result(asked.call_id);
    expect(first.body).toMatchObject({ action: "pass", output: { refunded: 900 } });
    expect((await result(asked.call_id)).status).toBe(404);
    // One approval, one call: asked again with it, the call is refused.
    const replay = await recheck(asked.approval.id);
    expect(replay.body).toMatchObject({ decision: "ask", reason_code: "approval_required" });
    expect(replay.body.approval.id).not.toBe(asked.approval.id);
    expect(await trailOf(asked.call_id)).toEqual([
      "outcome:allow:ok",
      "attempt:allow:ok",
      "approval:allow:ok",
      "attempt:ask:approval_required",
    ]);
  });

  it("lets an approval through for its own call only: not other arguments, not another user", async () => {
    const asked = await askRefund(700);
    await decide(manager, asked.approval.id, "approve");
    const otherAmount = await recheck(asked.approval.id, 50_000);
    expect(otherAmount.body).toMatchObject({ decision: "ask", reason_code: "approval_required" });
    expect(otherAmount.body.reason).toMatch(/is for another call/);
    const bob = await userToken(idp, "bob", "orders:write");
    const stolen = await recheck(asked.approval.id, 700, bob);
    expect(stolen.body.reason).toMatch(/is for another call/);
    expect(stolen.body.decision).toBe("ask");
    // the approval is still there for alice's call
    expect((await recheck(asked.approval.id, 700)).body.decision).toBe("allow");
  });

  it("lets a revocation win over an approval: before the approver decides, before the call runs, and at its report", async () => {
    const revoke = (permission: "deny" | null) =>
      call(server.url, "PATCH", "/v1/admin/tenants/acme/policy", {
        token: ADMIN,
        body: { users: { alice: permission === null ? null : { "*": { permission } } } },
      });
    try {
      // 1. revoked before the approver decides: the approval cannot be given
      const a1 = await askRefund(610);
      expect((await revoke("deny")).status).toBe(200);
      const late = await decide(manager, a1.approval.id, "approve");
      expect(late.status).toBe(409);
      expect(late.body.error.message).toMatch(/the policy in force now denies this call \(permission_deny/);
      expect((await call(server.url, "GET", a1.approval.url, { token: alice })).body.status).toBe("revoked");
      await revoke(null);
      // 2. revoked between the approval and the call: asked again, it is denied, and the approval revoked
      const a2 = await askRefund(620);
      await decide(manager, a2.approval.id, "approve");
      await revoke("deny");
      const refused = await recheck(a2.approval.id, 620);
      expect(refused.body).toMatchObject({ decision: "deny", reason_code: "permission_deny" });
      expect((await call(server.url, "GET", a2.approval.url, { token: alice })).body.status).toBe("revoked");
      expect(await trailOf(a2.call_id)).toEqual([
        "approval:deny:permission_deny",
        "attempt:deny:permission_deny",
        "approval:allow:ok",
        "attempt:ask:approval_required",
      ]);
      await revoke(null);
      // 3. revoked after the call was let through, before it reported: its output is withheld, audited
      const a3 = await askRefund(630);
      await decide(manager, a3.approval.id, "approve");
      expect((await recheck(a3.approval.id, 630)).body.decision).toBe("allow");
      await revoke("deny");
      const report = await result(a3.call_id);
      expect(report.status).toBe(403);
      expect(report.body.error.message).toMatch(
        /^permission_deny: output withheld: the policy in force denies/,
      );
      expect((await trailOf(a3.call_id))[0]).toBe("outcome:deny:permission_deny");
    } finally {
      await revoke(null);
    }
  });

  it("takes an approved call's report token once, also when its report is refused", async () => {
    const asked = await askRefund(800);
    expect((await decide(manager, asked.approval.id, "approve")).status).toBe(200);
    const run = await call(server.url, "POST", "/v1/check", {
      token: alice,
      body: {
        tool: "issue_refund",
        args: { order: "o-1", amount: 800 },
        agent: { name: "bot" },
        approval: asked.approval.id,
        report: "token",
      },
    });
    expect(run.body.decision).toBe("allow");
    const send = (token: string) =>
      call(server.url, "POST", `/v1/calls/${run.body.call_id}/result`, {
        token,
        body: { status: "ok", output: { refunded: 800 }, report_token: run.body.report_token },
      });
    // the same human with a token lacking the call's scope: the policy in force withholds the output
    const narrow = await userToken(idp, "alice", "customers:read");
    expect((await send(narrow)).status).toBe(403);
    expect((await send(narrow)).status).toBe(409);
    expect((await send(alice)).status).toBe(409);
    await server.governor.flush();
    expect((await trailOf(run.body.call_id)).filter((t: string) => t.startsWith("outcome:"))).toHaveLength(1);
  });

  it("refuses the result of a denied call, and audits approval_denied", async () => {
    const asked = await askRefund(901);
    await decide(ADMIN, asked.approval.id, "deny", "not this one");
    const r = await result(asked.call_id);
    expect(r.status).toBe(403);
    expect(r.body.error.message).toBe("approval_denied: denied by admin: not this one");
    const again = await recheck(asked.approval.id, 901);
    expect(again.body).toMatchObject({ decision: "deny", reason_code: "approval_denied" });
    const records = (
      await call(server.url, "GET", "/v1/audit?user=alice&decision=deny&limit=1000", { token: ADMIN })
    ).body.records;
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

describe("approvals shared through Redis", () => {
  it("lets exactly one of 16 concurrent decisions win, whatever the requester's arguments say, and keeps them exact", async () => {
    const redis = await startOwnRedis();
    const shared = await startTestServer(idp, { limits: { store: redis.url } });
    try {
      // The arguments carry the text a substring check on the stored JSON would take for the status.
      const asked = await call(shared.url, "POST", "/v1/check", {
        token: alice,
        body: {
          tool: "issue_refund",
          args: {
            order: "o-2",
            amount: 900,
            memo: { status: "pending" },
            note: '"status":"pending"',
            // What a re-encoding through Lua's cjson would change: 14 significant digits, [] as {}.
            big: 1234567890123456,
            tags: [],
          },
          agent: { name: "bot" },
        },
      });
      expect(asked.body.decision).toBe("ask");
      const id = asked.body.approval.id as string;
      const answers = await Promise.all(
        Array.from({ length: 16 }, (_, i) =>
          call(shared.url, "POST", `/v1/approvals/${id}`, {
            token: ADMIN,
            body: { decision: i % 2 === 0 ? "approve" : "deny" },
          }),
        ),
      );
      const won = answers.filter((a) => a.status === 200);
      expect(won).toHaveLength(1);
      expect(answers.filter((a) => a.status === 409)).toHaveLength(15);
      const final = (await call(shared.url, "GET", `/v1/approvals/${id}`, { token: ADMIN })).body;
      expect(final.status).toBe(won[0]!.body.status);
      // the arguments were never touched
      expect(final.args).toEqual({
        order: "o-2",
        amount: 900,
        memo: { status: "pending" },
        note: '"status":"pending"',
        big: 1234567890123456,
        tags: [],
      });
      const decided = (
        await call(shared.url, "GET", "/v1/audit?user=alice&tool=issue_refund&limit=100", { token: ADMIN })
      ).body.records.filter((r: { kind: string }) => r.kind === "approval");
      expect(decided).toHaveLength(1);
    } finally {
      await shared.close();
      await redis.stop();
    }
  });
});

describe("who may approve", () => {
  it("refuses a disabled member, a member whose directory scopes lack the approve scope, and an agent's delegation token", async () => {
    const strict = await startTestServer(idp, {
      tenants: [
        {
          id: "acme",
          users: [
            { uid: "dora", disabled: true },
            { uid: "carl", scopes: ["orders:write"] },
          ],
          policy: ACME_POLICY,
        },
      ],
    });
    try {
      const asked = await call(strict.url, "POST", "/v1/check", {
        token: alice,
        body: { tool: "issue_refund", args: { order: "o-9", amount: 900 }, agent: { name: "bot" } },
      });
      const id = asked.body.approval.id as string;
      const tryApprove = (token: string) =>
        call(strict.url, "POST", `/v1/approvals/${id}`, { token, body: { decision: "approve" } });
      const dora = await tryApprove(await userToken(idp, "dora", "onbehalf:approve"));
      expect(dora.status).toBe(403);
      expect(dora.body.error.message).toMatch(/dora is not a member of tenant acme in good standing/);
      const carl = await tryApprove(await userToken(idp, "carl", "orders:write onbehalf:approve"));
      expect(carl.status).toBe(403);
      expect(carl.body.error.message).toMatch(/capped by the tenant's directory/);
      const agent = await call(strict.url, "POST", "/v1/token", {
        body: {
          grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
          subject_token: manager,
          subject_token_type: "urn:ietf:params:oauth:token-type:access_token",
          actor: "inbox-agent",
        },
      });
      const viaAgent = await tryApprove(agent.body.access_token);
      expect(viaAgent.status).toBe(403);
      expect(viaAgent.body.error.message).toMatch(/an agent's delegation token cannot decide approvals/);
      expect((await call(strict.url, "GET", `/v1/approvals/${id}`, { token: ADMIN })).body.status).toBe(
        "pending",
      );
      expect((await tryApprove(manager)).body).toMatchObject({ status: "approved", decided_by: "mona" });
    } finally {
      await strict.close();
    }
  });
});
