import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { digestArgs } from "../../src/audit/record.js";
import { openSqliteStore } from "../../src/audit/sqlite.js";
import type { AuditStore } from "../../src/audit/store.js";
import { runContextOf } from "../../src/context/run.js";
import { isOnbehalfError, type OnbehalfError } from "../../src/errors.js";
import { type ApprovalStore, createMemoryApprovalStore } from "../../src/govern/approvals.js";
import { TEST_AUDIT_KEY, TEST_TOOLS, testGovernor } from "../support/governor.js";
import { principal } from "../support/principal.js";

const alice = principal({ user: "alice", scopes: ["customers:read", "refunds:write", "email.read"] });
const customer = { id: "c-1", name: "Ada", ssn: "078-05-1120", cards: [{ number: "4111", brand: "visa" }] };

async function rejection(p: Promise<unknown>): Promise<OnbehalfError> {
  try {
    await p;
  } catch (e) {
    if (isOnbehalfError(e)) return e;
    throw e;
  }
  throw new Error("expected a rejection");
}

/** A fault injector around a real SQLite store: a stand-in for a database that goes away while `down.on`. */
function flakyStore(): { flaky: AuditStore; down: { on: boolean } } {
  const real = openSqliteStore(":memory:");
  const down = { on: false };
  const flaky: AuditStore = {
    ...real,
    append: (b, holder) => (down.on ? Promise.reject(new Error("disk I/O error")) : real.append(b, holder)),
  };
  return { flaky, down };
}

describe("governed tools", () => {
  it("denies and audits a call whose arguments cannot be encoded, without running the tool", async () => {
    const { gov } = await testGovernor();
    let ran = false;
    const getCustomer = gov.governed({ name: "get_customer", execute: async (_: unknown) => (ran = true) });
    const cyclic: Record<string, unknown> = { id: "c-1" };
    cyclic["self"] = cyclic;
    const denied = await rejection(gov.runAs(alice, { agent: "bot" }, () => getCustomer(cyclic)));
    expect(denied.code).toBe("ERR_POLICY_DENIED");
    expect(ran).toBe(false);
    await gov.flush();
    const [attempt] = (await gov.queryAudit({ user: "alice" })).records;
    expect(attempt).toMatchObject({ decision: "deny", reason_code: "error", tool: "get_customer" });
    expect(attempt!.reason).toContain("cannot be encoded as JSON");
  });

  it("charges an asked call against the rate limit, once: asks cannot flood the approvers", async () => {
    const { gov } = await testGovernor({
      tenants: [
        {
          id: "acme",
          policy: {
            defaults: { "*": { permission: "allow", rate_limit_per_minute: 3 } },
            rules: [{ id: "big-refunds", tools: ["issue_refund"], when: "args.amount > 500", effect: "ask" }],
          },
        },
      ],
    });
    const run = runContextOf(alice, { chain: ["bot"], tier: "interactive" });
    const decisions: string[] = [];
    const asked = [];
    for (let i = 0; i < 5; i++) {
      const a = await gov.begin(run, "issue_refund", { amount: 900 + i });
      decisions.push(`${a.decision.decision}/${a.decision.reason_code}`);
      asked.push(a);
    }
    expect(decisions).toEqual([
      "ask/approval_required",
      "ask/approval_required",
      "ask/approval_required",
      "deny/rate_limited",
      "deny/rate_limited",
    ]);
    // An approved call was charged when it asked: asked again with its approval, it is not charged twice.
    const first = await gov.approvals.open(asked[0]!, { amount: 900 });
    await gov.approvals.decide(first.id, { id: "mona" }, "approve");
    const grant = await gov.approvals.take(run, "issue_refund", { amount: 900 });
    expect("begin" in grant).toBe(true);
    const approved = await gov.begin(
      run,
      "issue_refund",
      { amount: 900 },
      (grant as { begin: { callId: string; approved: { id: string; by: string } } }).begin,
    );
    expect(approved.decision).toMatchObject({ decision: "allow", reason_code: "ok" });
    await gov.close();
  });

  it("refuses arguments with the reserved key $typeName, which a CEL rule would read as another type", async () => {
    const { gov } = await testGovernor({
      tenants: [
        {
          id: "acme",
          policy: {
            defaults: { "*": { permission: "allow" } },
            rules: [
              {
                id: "only-acme",
                tools: ["read_email"],
                when: "!args.to.endsWith('@acme.com')",
                effect: "deny",
              },
            ],
          },
        },
      ],
    });
    let ran = false;
    const send = gov.governed({ name: "read_email", execute: async (_: unknown) => (ran = true) });
    // To CEL this is the string "boss@acme.com"; to the tool, an object.
    const disguised = { to: { $typeName: "google.protobuf.StringValue", value: "boss@acme.com" } };
    const denied = await rejection(gov.runAs(alice, { agent: "bot" }, () => send(disguised)));
    expect(denied.details).toMatchObject({ decision: "deny", reason_code: "error" });
    expect(denied.message).toMatch(/reserved key "\$typeName"/);
    expect(ran).toBe(false);
    await expect(gov.runAs(alice, { agent: "bot" }, () => send({ to: "eve@evil.example" }))).rejects.toThrow(
      /rule_deny/,
    );
    await gov.close();
  });

  it("records the arguments as they were decided, whatever the tool does to them afterwards", async () => {
    const { gov } = await testGovernor();
    const refund = gov.governed({
      name: "issue_refund",
      execute: async (args: Record<string, unknown>) => {
        args["amount"] = 1; // decided on 400, recorded as 1?
        args["self"] = args; // and now it cannot be serialized at all
        return "done";
      },
    });
    await expect(gov.runAs(alice, { agent: "bot" }, () => refund({ amount: 400 }))).resolves.toBe("done");
    await gov.flush();
    const records = (await gov.queryAudit({ tool: "issue_refund" })).records;
    expect(records.map((r) => [r.kind, r.args])).toEqual([
      ["outcome", { amount: 400 }],
      ["attempt", { amount: 400 }],
    ]);
    expect(records[1]!.args_digest).toBe(digestArgs({ amount: 400 }).digest);
    expect(gov.auditLog.healthy).toBe(true);
    await gov.close();
  });

  it("adds a second declaration of a tool to the first: no required scope or redaction path is dropped", async () => {
    const { gov } = await testGovernor();
    gov.declare({ name: "export_report", required_scopes: ["reports:export"], redact: ["owner.ssn"] });
    const exportReport = gov.governed({
      name: "export_report",
      description: "Export a report",
      execute: async () => ({ owner: { name: "Ada", ssn: "078-05-1120" } }),
    });
    const tool = gov.policy.tools.get("export_report");
    expect(tool?.requiredScopes).toEqual(["reports:export"]);
    expect(tool?.description).toBe("Export a report");
    const denied = await rejection(gov.runAs(alice, { agent: "bot" }, () => exportReport({})));
    expect(denied.code).toBe("ERR_POLICY_DENIED");
    expect(denied.message).toContain("reports:export");
    const reporter = principal({ user: "rita", scopes: ["reports:export"] });
    expect(await gov.runAs(reporter, { agent: "bot" }, () => exportReport({}))).toEqual({
      owner: { name: "Ada", ssn: "[REDACTED]" },
    });
  });

  it("decides, executes, redacts and audits an allowed call: attempt and outcome share a call_id", async () => {
    const { gov } = await testGovernor();
    let executed = 0;
    const getCustomer = gov.governed({
      name: "get_customer",
      execute: async ({ id, ssn }: { id: string; ssn?: string }) => {
        executed++;
        return { ...customer, id, echoed: ssn };
      },
    });
    const out = await gov.runAs(alice, { agent: "support-bot", tier: "interactive", traceId: "t-1" }, () =>
      getCustomer({ id: "c-9", ssn: "999" }),
    );
    expect(executed).toBe(1);
    expect(out).toMatchObject({
      id: "c-9",
      ssn: "[REDACTED]",
      cards: [{ number: "[REDACTED]", brand: "visa" }],
    });
    await gov.flush();
    const { records } = await gov.queryAudit({ user: "alice" });
    expect(records.map((r) => [r.kind, r.outcome])).toEqual([
      ["outcome", "ok"],
      ["attempt", "pending"],
    ]);
    const [outcome, attempt] = records;
    expect(outcome!.call_id).toBe(attempt!.call_id);
    expect(attempt).toMatchObject({
      tenant: "acme",
      user: "alice",
      agent: "support-bot",
      chain: ["support-bot"],
      tool: "get_customer",
      decision: "allow",
      reason_code: "ok",
      source: "inproc",
      trace_id: "t-1",
      args: { id: "c-9", ssn: "[REDACTED]" },
    });
    expect(attempt!.args_digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(outcome!.prev_hash).toBe(attempt!.leaf_hash);
    await gov.close();
  });

  it("rejects a denied call with ERR_POLICY_DENIED and the decision, without running the tool, and audits it", async () => {
    const { gov } = await testGovernor();
    let executed = false;
    const readEmail = gov.governed({ name: "read_email", execute: () => (executed = true) });
    const bob = principal({ user: "bob", scopes: ["customers:read"] });
    const e = await rejection(gov.runAs(bob, { agent: "bot" }, () => readEmail({})));
    expect(e.code).toBe("ERR_POLICY_DENIED");
    expect(e.details).toMatchObject({ decision: "deny", reason_code: "missing_scope" });
    expect(executed).toBe(false);
    await gov.flush();
    const { records } = await gov.queryAudit({ user: "bob" });
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({
      decision: "deny",
      reason_code: "missing_scope",
      outcome: "none",
      kind: "attempt",
    });
    await gov.close();
  });

  it("rejects a call with nothing bound with ERR_NO_IDENTITY, and audits it as unauthenticated", async () => {
    const { gov } = await testGovernor();
    const getCustomer = gov.governed({ name: "get_customer", execute: () => customer });
    const e = await rejection(getCustomer({ id: "c-1" }));
    expect(e.code).toBe("ERR_NO_IDENTITY");
    await gov.flush();
    const { records } = await gov.queryAudit({});
    expect(records[0]).toMatchObject({ user: null, decision: "deny", reason_code: "unauthenticated" });
    await gov.close();
  });

  it("asks for approval with ERR_APPROVAL_REQUIRED when a rule says ask", async () => {
    const { gov } = await testGovernor();
    const refund = gov.governed({
      name: "issue_refund",
      execute: ({ amount }: { amount: number }) => amount,
    });
    await expect(gov.runAs(alice, { agent: "bot" }, () => refund({ amount: 100 }))).resolves.toBe(100);
    const e = await rejection(gov.runAs(alice, { agent: "bot" }, () => refund({ amount: 900 })));
    expect(e.code).toBe("ERR_APPROVAL_REQUIRED");
    expect(e.details).toMatchObject({ decision: "ask", rule: "big-refunds" });
    await gov.close();
  });

  it("records the delegation chain and narrows scopes in governed calls", async () => {
    const { gov } = await testGovernor();
    const readEmail = gov.governed({ name: "read_email", execute: () => "mail" });
    const getCustomer = gov.governed({ name: "get_customer", execute: () => customer });
    await gov.runAs(alice, { agent: "planner" }, () =>
      gov.delegate("mail-agent", { scopes: ["email.read"] }, async () => {
        await expect(readEmail({})).resolves.toBe("mail");
        const e = await rejection(getCustomer({ id: "c-1" }));
        expect(e.details).toMatchObject({ reason_code: "missing_scope" });
      }),
    );
    await gov.flush();
    const denied = await gov.queryAudit({ decision: "deny" });
    expect(denied.records[0]).toMatchObject({
      chain: ["planner", "mail-agent"],
      agent: "mail-agent",
      tier: "subagent",
    });
    await gov.close();
  });

  it("audits a failing tool as an error outcome and rethrows its error; where output is redacted, without its message", async () => {
    const { gov } = await testGovernor();
    const failing = (name: string) =>
      gov.governed({
        name,
        execute: async () => {
          throw new Error(`database is down (ssn 078-05-1120)`);
        },
      });
    await expect(gov.runAs(alice, { agent: "bot" }, () => failing("read_email")({}))).rejects.toThrow(
      "database is down",
    );
    await expect(gov.runAs(alice, { agent: "bot" }, () => failing("get_customer")({}))).rejects.toThrow(
      "database is down",
    );
    await gov.flush();
    const { records } = await gov.queryAudit({ user: "alice" });
    expect(records[2]).toMatchObject({
      kind: "outcome",
      tool: "read_email",
      outcome: "error",
      reason: "tool failed: database is down (ssn 078-05-1120)",
    });
    expect(records[0]).toMatchObject({
      kind: "outcome",
      tool: "get_customer",
      outcome: "error",
      reason: "tool failed (its message is not kept: policy redacts or blocks this tool's output)",
    });
    await gov.close();
  });

  it("withholds output when the post-transform is block", async () => {
    const { gov } = await testGovernor({
      tenants: [
        { id: "acme", policy: { defaults: { "*": { permission: "allow", post_transform: "block" } } } },
      ],
    });
    const getCustomer = gov.governed({ name: "get_customer", execute: () => customer });
    const e = await rejection(gov.runAs(alice, { agent: "bot" }, () => getCustomer({})));
    expect(e.code).toBe("ERR_OUTPUT_BLOCKED");
    await gov.flush();
    expect((await gov.queryAudit({ user: "alice" })).records[0]).toMatchObject({ outcome: "blocked" });
    await gov.close();
  });

  it("shares one human's rate limit across agents and parallel fan-out, and never counts denied calls", async () => {
    const { gov } = await testGovernor({
      tenants: [
        { id: "acme", policy: { defaults: { "*": { permission: "allow", rate_limit_per_minute: 10 } } } },
      ],
    });
    const lookup = gov.governed({ name: "get_customer", execute: () => "ok" });
    const refund = gov.governed({ name: "issue_refund", execute: () => "ok" });
    const outcomes = await gov.runAs(alice, { agent: "root" }, () =>
      Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          gov.delegate(`worker-${i}`, { scopes: i % 2 === 0 ? ["customers:read"] : [] }, () =>
            Promise.allSettled([lookup({}), lookup({}), refund({})]),
          ),
        ),
      ),
    );
    const flat = outcomes.flat();
    const allowed = flat.filter((r) => r.status === "fulfilled").length;
    const limited = flat.filter(
      (r) => r.status === "rejected" && isOnbehalfError(r.reason, "ERR_RATE_LIMITED"),
    ).length;
    const scopeDenied = flat.filter(
      (r) => r.status === "rejected" && isOnbehalfError(r.reason, "ERR_POLICY_DENIED"),
    ).length;
    expect(scopeDenied).toBe(16); // refunds everywhere, lookups by the odd workers: none of them counted
    expect(allowed).toBe(8); // 8 lookups fit among 10; the 2 spare slots were never used by denied calls
    expect(limited).toBe(0);
    // the remaining budget of this human in the subagent tier (the workers' tier) is exactly 2
    const more = await gov.runAs(alice, { agent: "other-bot", tier: "subagent" }, () =>
      Promise.allSettled([lookup({}), lookup({}), lookup({})]),
    );
    expect(more.map((r) => (r.status === "fulfilled" ? "ok" : (r.reason as OnbehalfError).code))).toEqual([
      "ok",
      "ok",
      "ERR_RATE_LIMITED",
    ]);
    // another tier has a budget of its own, and so has another human
    await expect(gov.runAs(alice, { agent: "root", tier: "interactive" }, () => lookup({}))).resolves.toBe(
      "ok",
    );
    const bob = principal({ user: "bob", scopes: ["customers:read"] });
    await expect(gov.runAs(bob, { agent: "root" }, () => lookup({}))).resolves.toBe("ok");
    await gov.close();
  });

  it("in durability sync, commits the attempt record before the tool runs", async () => {
    const store = openSqliteStore(":memory:");
    const { gov } = await testGovernor(
      {
        audit: { store: "sqlite::memory:", durability: "sync", flush_ms: 1000, signing_key: TEST_AUDIT_KEY },
      },
      { auditStore: store },
    );
    const getCustomer = gov.governed({
      name: "get_customer",
      execute: async (_args: object, ctx) => (await store.query({ call_id: ctx.callId })).records.length,
    });
    await expect(gov.runAs(alice, { agent: "bot" }, () => getCustomer({}))).resolves.toBe(1);
    await gov.close();
  });

  it("keeps an approved call's denial when the approvals' store cannot take the approval back", async () => {
    const { flaky, down } = flakyStore();
    // A stand-in for an approvals' store that fails (Redis away) only when an approval taken for a call is given back.
    const memory = createMemoryApprovalStore(Date.now);
    const approvals: ApprovalStore = {
      ...memory,
      transitionApproval: (id, from, update) =>
        from === "used"
          ? Promise.reject(new Error("Redis is away"))
          : memory.transitionApproval(id, from, update),
    };
    const { gov, warnings } = await testGovernor({}, { auditStore: flaky, approvalStore: approvals });
    try {
      const run = runContextOf(alice, { chain: ["bot"], tier: "interactive" });
      const asked = await gov.begin(run, "issue_refund", { amount: 900 });
      const approval = await gov.approvals.open(asked, { amount: 900 });
      await gov.approvals.decide(approval.id, { id: "mona" }, "approve");
      down.on = true;
      await gov.begin(run, "get_customer", {}); // its record fails: from then on the audit is unhealthy
      await new Promise((r) => setTimeout(r, 20));
      const again = await gov.beginApproved(run, "issue_refund", { amount: 900 }, approval.id);
      expect("attempt" in again && again.attempt.decision).toMatchObject({
        decision: "deny",
        reason_code: "fail_closed",
      });
      expect(warnings).toContainEqual(
        expect.stringMatching(`approval ${approval.id} stays used: Redis is away`),
      );
    } finally {
      down.on = false;
      await gov.close();
      memory.close();
    }
  });

  it("still denies what the policy denies or asks about once a long outage has filled the audit queue", async () => {
    const { flaky, down } = flakyStore();
    const policy = {
      defaults: { "*": { permission: "allow" as const } },
      rules: [
        { id: "no-email", tools: ["read_email"], when: "true", effect: "deny" as const },
        { id: "big-refunds", tools: ["issue_refund"], when: "args.amount > 500", effect: "ask" as const },
      ],
    };
    const { gov } = await testGovernor({ tenants: [{ id: "acme", policy }] }, { auditStore: flaky });
    try {
      const run = runContextOf(alice, { chain: ["bot"], tier: "interactive" });
      down.on = true;
      // every call during the outage is queued (a fail_closed denial), until the queue is full
      for (let i = 0; gov.auditLog.dropped === 0 && i < 200_000; i++)
        await gov.begin(run, "get_customer", { i });
      expect(gov.auditLog.dropped).toBe(1);
      const denied = await gov.begin(run, "read_email", {});
      expect(denied.decision).toMatchObject({ decision: "deny", reason_code: "rule_deny", rule: "no-email" });
      const asked = await gov.begin(run, "issue_refund", { amount: 900 });
      expect(asked.decision).toMatchObject({
        decision: "deny",
        reason_code: "fail_closed",
        policy_verdict: "ask",
      });
      // what the policy allows fails closed as during any outage (answered 503 by /v1/check)
      const allowed = await gov.begin(run, "get_customer", {});
      expect(allowed.decision).toMatchObject({
        decision: "deny",
        reason_code: "fail_closed",
        policy_verdict: "allow",
      });
      expect(gov.auditLog.dropped).toBe(4);
    } finally {
      down.on = false;
      await gov.close();
    }
  }, 60_000);

  it("fails closed while the audit store is down, and recovers when it is back", async () => {
    const { flaky, down } = flakyStore();
    const policy = {
      defaults: { "*": { permission: "allow" as const } },
      rules: [{ id: "no-email", tools: ["read_email"], when: "true", effect: "deny" as const }],
    };
    const { gov } = await testGovernor({ tenants: [{ id: "acme", policy }] }, { auditStore: flaky });
    const getCustomer = gov.governed({ name: "get_customer", execute: () => true });
    await expect(gov.runAs(alice, { agent: "bot" }, () => getCustomer({}))).resolves.toBe(true);
    down.on = true;
    await gov.runAs(alice, { agent: "bot" }, () => getCustomer({}));
    await new Promise((r) => setTimeout(r, 20));
    const e = await rejection(gov.runAs(alice, { agent: "bot" }, () => getCustomer({})));
    expect(e.details).toMatchObject({ decision: "deny", reason_code: "fail_closed" });
    // what the policy denies keeps its own denial (a fail-open client would run a call on an outage's)
    const readEmail = gov.governed({ name: "read_email", execute: () => true });
    const refused = await rejection(gov.runAs(alice, { agent: "bot" }, () => readEmail({})));
    expect(refused.details).toMatchObject({ decision: "deny", reason_code: "rule_deny", rule: "no-email" });
    down.on = false;
    await gov.flush();
    await expect(gov.runAs(alice, { agent: "bot" }, () => getCustomer({}))).resolves.toBe(true);
    await gov.close();
  });

  it("keeps a tight loop of awaited calls going on a healthy store: calls wait for the writer, none fails", async () => {
    const dir = mkdtempSync(join(tmpdir(), "onbehalf-tight-"));
    const { gov } = await testGovernor({
      audit: { store: `sqlite:${join(dir, "audit.db")}`, signing_key: TEST_AUDIT_KEY },
    });
    // A cached tool: it answers at once, so the loop never returns to the event loop on its own. 120,000
    // records is past the 100,000 the writer may hold: without back-pressure, this loop used to fail.
    const read = gov.governed({ name: "get_customer", execute: (args: { n: number }) => args.n });
    let n = 0;
    await gov.runAs(alice, { agent: "batch-job" }, async () => {
      while (n < 60_000) await read({ n: n++ });
    });
    expect(gov.auditLog.healthy).toBe(true);
    expect(gov.auditLog.dropped).toBe(0);
    await gov.flush();
    expect(gov.auditLog.committed).toBe(120_000); // an attempt and an outcome per call, every one written
    await gov.close();
  }, 60_000);

  it("runs shadow mode: would-be denials go ahead and are audited with the verdict", async () => {
    const { gov } = await testGovernor({
      tenants: [
        { id: "acme", policy: { mode: "shadow", tools: { get_customer: { "*": { permission: "deny" } } } } },
      ],
    });
    const getCustomer = gov.governed({ name: "get_customer", execute: () => "ran" });
    await expect(gov.runAs(alice, { agent: "bot" }, () => getCustomer({}))).resolves.toBe("ran");
    await gov.flush();
    const attempt = (await gov.queryAudit({ user: "alice" })).records.find((r) => r.kind === "attempt");
    expect(attempt).toMatchObject({
      decision: "allow",
      shadow: { decision: "deny", reason_code: "permission_deny" },
    });
    await gov.close();
  });

  it("applies a revocation in the directory or the policy on the next call", async () => {
    const { gov } = await testGovernor();
    const getCustomer = gov.governed({ name: "get_customer", execute: () => true });
    const call = () => gov.runAs(alice, { agent: "bot" }, () => getCustomer({}));
    await expect(call()).resolves.toBe(true);
    gov.replaceTenant({
      id: "acme",
      require_membership: true,
      users: [{ uid: "alice", disabled: true }],
      policy: { defaults: { "*": { permission: "allow" } } },
    });
    expect((await rejection(call())).details).toMatchObject({ reason_code: "not_a_member" });
    gov.replaceTenant({
      id: "acme",
      users: [{ uid: "alice", scopes: ["email.read"] }],
      policy: { defaults: { "*": { permission: "allow" } } },
    });
    expect((await rejection(call())).details).toMatchObject({ reason_code: "missing_scope" });
    gov.replaceTenant({ id: "acme", policy: { defaults: { "*": { permission: "allow" } } } });
    await expect(call()).resolves.toBe(true);
    gov.patchTenantPolicy("acme", { tools: { get_customer: { "*": { permission: "deny" } } } });
    expect((await rejection(call())).details).toMatchObject({ reason_code: "permission_deny" });
    await gov.close();
  });

  it("keeps the policy in force when an update is invalid", async () => {
    const { gov } = await testGovernor();
    const getCustomer = gov.governed({ name: "get_customer", execute: () => true });
    expect(() => gov.patchTenantPolicy("acme", { defaults: { interactiv: { permission: "deny" } } })).toThrow(
      /unknown tier "interactiv"/,
    );
    await expect(gov.runAs(alice, { agent: "bot" }, () => getCustomer({}))).resolves.toBe(true);
    await gov.close();
  });

  it("warns when a tool takes a free-form command or code string", async () => {
    const { gov, warnings } = await testGovernor({
      tools: [...TEST_TOOLS, { name: "bash" }, { name: "lookup" }],
    });
    gov.governed({
      name: "bash",
      input_schema: { type: "object", properties: { command: { type: "string" } } },
      execute: () => "",
    });
    gov.governed({
      name: "lookup",
      input_schema: { type: "object", properties: { id: { type: "string" } } },
      execute: () => "",
    });
    const lint = warnings.filter((w) => w.includes("free-form"));
    expect(lint).toHaveLength(1);
    expect(lint[0]).toMatch(/tool "bash" appears to take a free-form command or code string \(command\)/);
    await gov.close();
  });

  it("lets code declare tools the config does not name, and only ever adds scopes to config tools", async () => {
    const { gov } = await testGovernor();
    const extra = gov.governed({ name: "weather", required_scopes: ["weather"], execute: () => "sunny" });
    const stricter = gov.governed({
      name: "get_customer",
      required_scopes: ["pii"],
      execute: () => customer,
    });
    expect(gov.policy.tools.get("get_customer")!.requiredScopes).toEqual(["customers:read", "pii"]);
    const e = await rejection(gov.runAs(alice, { agent: "bot" }, () => extra({})));
    expect(e.details).toMatchObject({ reason_code: "missing_scope" });
    const weatherman = principal({ user: "w", scopes: ["weather"] });
    await expect(gov.runAs(weatherman, { agent: "bot" }, () => extra({}))).resolves.toBe("sunny");
    expect((await rejection(gov.runAs(alice, { agent: "bot" }, () => stricter({})))).details).toMatchObject({
      reason_code: "missing_scope",
    });
    await gov.close();
  });
});
