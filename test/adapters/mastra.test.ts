import { Agent } from "@mastra/core/agent";
import { RequestContext } from "@mastra/core/request-context";
import { createTool } from "@mastra/core/tools";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { z } from "zod";
import { governedTool, governTools, runFor, subagent } from "../../src/adapters/mastra.js";
import type { Governor } from "../../src/govern/governor.js";
import { scriptedModel } from "./mock-model.js";
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

let gov: Governor;
beforeEach(async () => {
  gov = await adapterGovernor();
});
afterEach(() => gov.close());

function fixtures() {
  const ran: string[] = [];
  const getCustomer = createTool({
    id: "get_customer",
    description: "Look up a customer",
    inputSchema: z.object({ id: z.string() }),
    execute: async ({ id }) => {
      await tick();
      ran.push(`get_customer:${id}`);
      return { ...customer, id };
    },
  });
  const readEmail = createTool({
    id: "read_email",
    description: "Read a mailbox",
    inputSchema: z.object({ mailbox: z.string() }),
    execute: async ({ mailbox }) => {
      await tick();
      ran.push(`read_email:${mailbox}`);
      return { summary: `3 new messages in ${mailbox}` };
    },
  });
  return { ran, getCustomer, readEmail };
}

/** A supervisor that looks a customer up, then delegates to a mailer sub-agent (email.read only). */
function twoAgents(mailbox: string) {
  const { ran, getCustomer, readEmail } = fixtures();
  const mailerModel = scriptedModel([
    {
      tools: [
        ["read_email", { mailbox }],
        ["get_customer", { id: "c-1" }],
      ],
    },
    "mail read",
  ]);
  const mailer = subagent(
    new Agent({
      id: "mailer",
      name: "mailer",
      description: "Reads mail",
      instructions: "You read mail.",
      model: mailerModel.model,
      tools: governTools(gov, { read_email: readEmail, get_customer: getCustomer }),
    }),
    { scopes: ["email.read"] },
  );
  const supervisorModel = scriptedModel([
    { tools: [["get_customer", { id: "c-1" }]] },
    { tools: [["agent-mailer", { prompt: "read my mail" }]] },
    "all done",
  ]);
  const supervisor = new Agent({
    id: "supervisor",
    name: "supervisor",
    instructions: "You help customers.",
    model: supervisorModel.model,
    tools: governTools(gov, { get_customer: getCustomer }),
    agents: { mailer },
  });
  return { ran, supervisor, supervisorModel, mailerModel };
}

describe("Mastra adapter", () => {
  it("runs a sub-agent in the chain with its scopes and denies its over-reaching call, naming the human", async () => {
    const { ran, supervisor, supervisorModel, mailerModel } = twoAgents("alice@acme.test");
    const result = await gov.runAs(alice, { agent: "supervisor" }, () => supervisor.generate("mail?"));
    expect(result.text).toBe("all done");
    expect(ran.sort()).toEqual(["get_customer:c-1", "read_email:alice@acme.test"]);
    expect(mailerModel.shown().join()).toContain("onbehalf refused get_customer: missing_scope");
    expect(supervisorModel.shown().join()).toContain("[REDACTED]");
    expect(supervisorModel.shown().join()).not.toContain(customer.ssn);
    expect(await attemptsOf(gov, "alice")).toEqual(handOffAttempts("supervisor"));
    expect((await auditOf(gov, "alice")).every((r) => r.email === "alice@acme.test")).toBe(true);
  });

  it("never lets identity bleed between two concurrent runs for different users", async () => {
    const a = twoAgents("alice@acme.test");
    const b = twoAgents("bob@acme.test");
    const requestContext = new RequestContext();
    requestContext.set("onbehalf", runFor(bob, { agent: "supervisor" }));
    await Promise.all([
      gov.runAs(alice, { agent: "supervisor" }, () => a.supervisor.generate("mail?")),
      // Bob's identity rides in Mastra's request context instead of the bound run
      b.supervisor.generate("mail?", { requestContext }),
    ]);
    expect(a.ran).toContain("read_email:alice@acme.test");
    expect(b.ran).not.toContain("read_email:bob@acme.test");
    expect(await attemptsOf(gov, "bob")).toEqual(handOffAttempts("supervisor", "deny"));
    expect((await attemptsOf(gov, "alice")).map((r) => r[1])).toEqual(["allow", "allow", "deny"]);
  });

  it("fails closed: with no identity the tool never runs and returns Mastra's tool-error shape", async () => {
    const { ran, getCustomer } = fixtures();
    const tool = governedTool(gov, getCustomer);
    const out = await tool.execute!({ id: "c-1" }, { requestContext: new RequestContext() } as never);
    expect(ran).toEqual([]);
    expect(out).toMatchObject({ error: true, message: expect.stringContaining("ERR_NO_IDENTITY") });
    const m = scriptedModel([{ tools: [["get_customer", { id: "c-1" }]] }, "sorry"]);
    const agent = new Agent({
      id: "bot",
      name: "bot",
      instructions: "-",
      model: m.model,
      tools: { get_customer: tool },
    });
    await agent.generate("hi");
    expect(ran).toEqual([]);
    expect(m.shown().join()).toContain("onbehalf refused get_customer");
  });
});
