import { Agent, run, setTracingDisabled, tool } from "@openai/agents";
import { assistantMessage, functionCall, ScriptedModel } from "@openai/agents-core/testing";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { z } from "zod";
import { governedAgent, governedTool, runFor } from "../../src/adapters/openai-agents.js";
import type { Governor } from "../../src/govern/governor.js";
import {
  adapterGovernor,
  alice,
  attemptsOf,
  auditOf,
  bob,
  customer,
  handOffAttempts,
  tick,
} from "./support.js";

setTracingDisabled(true);

let gov: Governor;
beforeEach(async () => {
  gov = await adapterGovernor();
});
afterEach(() => gov.close());

/** What each tool ran with, and the tools every test agent uses. */
function fixtures() {
  const ran: string[] = [];
  const getCustomer = tool({
    name: "get_customer",
    description: "Look up a customer",
    parameters: z.object({ id: z.string() }),
    execute: async ({ id }) => {
      await tick();
      ran.push(`get_customer:${id}`);
      return { ...customer, id };
    },
  });
  const readEmail = tool({
    name: "read_email",
    description: "Read a mailbox",
    parameters: z.object({ mailbox: z.string() }),
    execute: async ({ mailbox }) => {
      await tick();
      ran.push(`read_email:${mailbox}`);
      return `3 new messages in ${mailbox}`;
    },
  });
  return { ran, getCustomer, readEmail };
}

/** Triage (may read customers) hands off to mailer (limited to email.read), who over-reaches. */
function twoAgents(mailbox: string) {
  const f = fixtures();
  const mailerModel = new ScriptedModel([
    [
      functionCall("read_email", { mailbox }, { callId: "m1" }),
      functionCall("get_customer", { id: "c-1" }, { callId: "m2" }),
    ],
    [assistantMessage("done")],
  ]);
  const mailer = governedAgent(
    gov,
    new Agent({ name: "mailer", model: mailerModel, tools: [f.readEmail, f.getCustomer] }),
    { scopes: ["email.read"] },
  );
  const triageModel = new ScriptedModel([
    [functionCall("get_customer", { id: "c-1" }, { callId: "t1" })],
    [functionCall("transfer_to_mailer", {}, { callId: "t2" })],
  ]);
  const triage = governedAgent(
    gov,
    new Agent({ name: "triage", model: triageModel, tools: [f.getCustomer], handoffs: [mailer] }),
  );
  return { ...f, triage, mailer, mailerModel };
}

/** The tool outputs the model was shown in its last request. */
function shownToModel(model: ScriptedModel): string[] {
  const input = model.lastCall?.request.input;
  if (!Array.isArray(input)) return [];
  return (input as { type?: string; output?: string | { type?: string; text?: string } }[]).flatMap(
    (item) => {
      const out = item.output;
      if (item.type !== "function_call_result") return [];
      return typeof out === "string" ? [out] : out?.text === undefined ? [] : [out.text];
    },
  );
}

describe("OpenAI Agents adapter", () => {
  it("extends the chain on a hand-off and denies the second agent's over-reaching call, naming the human", async () => {
    const { ran, triage, mailerModel } = twoAgents("alice@acme.test");
    const result = await gov.runAs(alice, { agent: "triage" }, () => run(triage, "check my mail"));
    expect(result.finalOutput).toBe("done");
    expect(ran.sort()).toEqual(["get_customer:c-1", "read_email:alice@acme.test"]);
    const shown = shownToModel(mailerModel);
    expect(shown).toContainEqual(expect.stringContaining("onbehalf refused get_customer: missing_scope"));
    // what the triage agent was shown of the customer is redacted by policy
    const seenByTriage = shownToModel(triage.model as ScriptedModel).join();
    expect(seenByTriage).toContain("[REDACTED]");
    expect(seenByTriage).not.toContain(customer.ssn);
    expect(await attemptsOf(gov, "alice")).toEqual(handOffAttempts("triage"));
    const records = await auditOf(gov, "alice");
    expect(records.every((r) => r.user === "alice" && r.email === "alice@acme.test")).toBe(true);
    expect(records.find((r) => r.kind === "outcome" && r.tool === "get_customer")?.outcome).toBe("ok");
  });

  it("never lets identity bleed between two concurrent runs for different users", async () => {
    const a = twoAgents("alice@acme.test");
    const b = twoAgents("bob@acme.test");
    await Promise.all([
      gov.runAs(alice, { agent: "triage" }, () => run(a.triage, "mail")),
      run(b.triage, "mail", { context: { onbehalf: runFor(bob, { agent: "triage" }) } }),
    ]);
    expect(a.ran).toContain("read_email:alice@acme.test");
    expect(b.ran).not.toContain("read_email:bob@acme.test");
    expect(await attemptsOf(gov, "bob")).toEqual(handOffAttempts("triage", "deny"));
    expect((await attemptsOf(gov, "alice")).map((r) => r[1])).toEqual(["allow", "allow", "deny"]);
  });

  it("runs an agent-as-tool as a sub-agent with its declared scopes", async () => {
    const f = fixtures();
    const mailer = governedAgent(
      gov,
      new Agent({
        name: "mailer",
        model: new ScriptedModel([
          [functionCall("get_customer", { id: "c-1" }, { callId: "s1" })],
          [assistantMessage("no access")],
        ]),
        tools: [f.getCustomer],
      }),
      { scopes: ["email.read"] },
    );
    const planner = governedAgent(
      gov,
      new Agent({
        name: "planner",
        model: new ScriptedModel([
          [functionCall("ask_mailer", { input: "find c-1" }, { callId: "p1" })],
          [assistantMessage("ok")],
        ]),
        tools: [mailer.asTool({ toolName: "ask_mailer", toolDescription: "mail specialist" })],
      }),
    );
    await gov.runAs(alice, { agent: "planner" }, () => run(planner, "go"));
    expect(f.ran).toEqual([]);
    expect(await attemptsOf(gov, "alice")).toEqual([
      ["get_customer", "deny", "missing_scope", ["planner", "mailer"]],
    ]);
  });

  it("fails closed: with no identity the tool never runs, and the model is told why", async () => {
    const f = fixtures();
    const model = new ScriptedModel([
      [functionCall("get_customer", { id: "c-1" }, { callId: "n1" })],
      [assistantMessage("sorry")],
    ]);
    const agent = new Agent({ name: "bot", model, tools: [governedTool(gov, f.getCustomer)] });
    await run(agent, "hi");
    expect(f.ran).toEqual([]);
    expect(shownToModel(model)[0]).toMatch(/onbehalf refused get_customer: .*ERR_NO_IDENTITY/);
  });

  it("throws the OnbehalfError instead when onDeny is throw", async () => {
    const f = fixtures();
    const model = new ScriptedModel([[functionCall("read_email", { mailbox: "x" }, { callId: "d1" })]]);
    const agent = new Agent({
      name: "bot",
      model,
      tools: [governedTool(gov, f.readEmail, { onDeny: "throw" })],
    });
    await expect(gov.runAs(bob, { agent: "bot" }, () => run(agent, "hi"))).rejects.toMatchObject({
      message: expect.stringContaining("missing_scope"),
    });
  });

  function billing(refunds: number[]) {
    const refund = governedTool(
      gov,
      tool({
        name: "issue_refund",
        description: "Refund",
        parameters: z.object({ amount: z.number() }),
        execute: async ({ amount }) => {
          refunds.push(amount);
          return "refunded";
        },
      }),
    );
    return new Agent({
      name: "billing",
      model: new ScriptedModel([
        [functionCall("issue_refund", { amount: 900 }, { callId: "r1" })],
        [assistantMessage("refund issued")],
      ]),
      tools: [refund],
    });
  }

  it("maps ask to needsApproval: the run is interrupted, and the call runs once an approver approved it", async () => {
    const refunds: number[] = [];
    const agent = billing(refunds);
    const first = await gov.runAs(alice, { agent: "billing" }, () => run(agent, "refund 900"));
    expect(first.interruptions).toHaveLength(1);
    expect(refunds).toEqual([]);
    const [pending] = await gov.approvals.list("pending");
    await gov.approvals.decide(pending!.id, { id: "mona" }, "approve");
    first.state.approve(first.interruptions![0]!);
    const second = await gov.runAs(alice, { agent: "billing" }, () => run(agent, first.state));
    expect(second.finalOutput).toBe("refund issued");
    expect(refunds).toEqual([900]);
    const records = await auditOf(gov, "alice");
    expect(records.map((r) => [r.kind, r.decision, r.outcome])).toEqual([
      ["attempt", "ask", "pending"],
      ["approval", "allow", "pending"],
      ["attempt", "allow", "pending"], // decided again when it runs, approved
      ["outcome", "allow", "ok"],
    ]);
    expect(new Set(records.map((r) => r.call_id)).size).toBe(1);
  });

  it("runs nothing on the app's state.approve alone: only an approver's approval counts", async () => {
    const refunds: number[] = [];
    const agent = billing(refunds);
    const first = await gov.runAs(alice, { agent: "billing" }, () => run(agent, "refund 900"));
    first.state.approve(first.interruptions![0]!);
    const second = await gov.runAs(alice, { agent: "billing" }, () => run(agent, first.state));
    expect(refunds).toEqual([]);
    expect(JSON.stringify(second.newItems)).toContain("waiting for a human to approve");
  });

  it("decides a resumed call under the policy in force: a revocation after the approval wins", async () => {
    const refunds: number[] = [];
    const agent = billing(refunds);
    const first = await gov.runAs(alice, { agent: "billing" }, () => run(agent, "refund 900"));
    const [pending] = await gov.approvals.list("pending");
    await gov.approvals.decide(pending!.id, { id: "mona" }, "approve");
    gov.patchTenantPolicy("acme", { users: { alice: { "*": { permission: "deny" } } } });
    first.state.approve(first.interruptions![0]!);
    const second = await gov.runAs(alice, { agent: "billing" }, () => run(agent, first.state));
    expect(refunds).toEqual([]);
    expect(JSON.stringify(second.newItems)).toContain("permission_deny");
    expect((await gov.approvals.get(pending!.id))?.status).toBe("revoked");
  });
});
