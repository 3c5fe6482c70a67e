import { AIMessage, createAgent, fakeModel, ToolMessage, tool } from "langchain";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { z } from "zod";
import { governedTool, onbehalfMiddleware, runFor, subagentTool } from "../../src/adapters/langchain.js";
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

let gov: Governor;
beforeEach(async () => {
  gov = await adapterGovernor();
});
afterEach(() => gov.close());

type Fake = ReturnType<typeof fakeModel>;

function fixtures() {
  const ran: string[] = [];
  const getCustomer = tool(
    async ({ id }) => {
      await tick();
      ran.push(`get_customer:${id}`);
      return { ...customer, id };
    },
    { name: "get_customer", description: "Look up a customer", schema: z.object({ id: z.string() }) },
  );
  const readEmail = tool(
    async ({ mailbox }) => {
      await tick();
      ran.push(`read_email:${mailbox}`);
      return `3 new messages in ${mailbox}`;
    },
    { name: "read_email", description: "Read a mailbox", schema: z.object({ mailbox: z.string() }) },
  );
  return { ran, getCustomer, readEmail };
}

/** The tool results the model was shown in its last call. */
function shownTo(model: Fake): string[] {
  const messages = model.calls.at(-1)?.messages ?? [];
  return messages.filter((m) => ToolMessage.isInstance(m)).map((m) => String(m.content));
}

/** A supervisor that looks a customer up, then asks a mailer sub-agent (email.read only), who over-reaches. */
function twoAgents(mailbox: string) {
  const { ran, getCustomer, readEmail } = fixtures();
  const mailerModel = fakeModel()
    .respondWithTools([
      { name: "read_email", args: { mailbox } },
      { name: "get_customer", args: { id: "c-1" } },
    ])
    .respond(new AIMessage("mail read"));
  const mailer = createAgent({
    model: mailerModel,
    tools: [readEmail, getCustomer],
    middleware: [onbehalfMiddleware(gov)],
  });
  const askMailer = subagentTool(
    tool(
      async ({ task }) => {
        const result = await mailer.invoke({ messages: [{ role: "user", content: task }] });
        return String(result.messages.at(-1)?.content);
      },
      { name: "ask_mailer", description: "Ask the mail specialist", schema: z.object({ task: z.string() }) },
    ),
    { agent: "mailer", scopes: ["email.read"] },
  );
  const supervisorModel = fakeModel()
    .respondWithTools([{ name: "get_customer", args: { id: "c-1" } }])
    .respondWithTools([{ name: "ask_mailer", args: { task: "read my mail" } }])
    .respond(new AIMessage("all done"));
  const supervisor = createAgent({
    model: supervisorModel,
    tools: [getCustomer, askMailer],
    middleware: [onbehalfMiddleware(gov)],
  });
  return { ran, supervisor, supervisorModel, mailerModel };
}

describe("LangChain adapter", () => {
  it("governs every tool of createAgent agents through the middleware; the sub-agent's over-reach is denied", async () => {
    const { ran, supervisor, supervisorModel, mailerModel } = twoAgents("alice@acme.test");
    const result = await gov.runAs(alice, { agent: "supervisor" }, () =>
      supervisor.invoke({ messages: [{ role: "user", content: "mail?" }] }),
    );
    expect(result.messages.at(-1)?.content).toBe("all done");
    expect(ran.sort()).toEqual(["get_customer:c-1", "read_email:alice@acme.test"]);
    expect(shownTo(mailerModel)).toContainEqual(
      expect.stringContaining("onbehalf refused get_customer: missing_scope"),
    );
    const seen = shownTo(supervisorModel).join();
    expect(seen).toContain("[REDACTED]");
    expect(seen).not.toContain(customer.ssn);
    expect(await attemptsOf(gov, "alice")).toEqual(handOffAttempts("supervisor"));
    expect((await auditOf(gov, "alice")).every((r) => r.email === "alice@acme.test")).toBe(true);
  });

  it("never lets identity bleed between two concurrent runs for different users", async () => {
    const a = twoAgents("alice@acme.test");
    const b = twoAgents("bob@acme.test");
    await Promise.all([
      gov.runAs(alice, { agent: "supervisor" }, () =>
        a.supervisor.invoke({ messages: [{ role: "user", content: "mail?" }] }),
      ),
      // Bob's identity rides in the agent's runtime context instead of the bound run
      b.supervisor.invoke(
        { messages: [{ role: "user", content: "mail?" }] },
        { context: { onbehalf: runFor(bob, { agent: "supervisor" }) } },
      ),
    ]);
    expect(a.ran).toContain("read_email:alice@acme.test");
    expect(b.ran).not.toContain("read_email:bob@acme.test");
    expect(await attemptsOf(gov, "bob")).toEqual(handOffAttempts("supervisor", "deny"));
    expect((await attemptsOf(gov, "alice")).map((r) => r[1])).toEqual(["allow", "allow", "deny"]);
  });

  it("governs a single tool with governedTool, and fails closed with no identity", async () => {
    const { ran, getCustomer } = fixtures();
    const model = fakeModel()
      .respondWithTools([{ name: "get_customer", args: { id: "c-1" } }])
      .respond(new AIMessage("sorry"));
    const agent = createAgent({ model, tools: [governedTool(gov, getCustomer)] });
    await agent.invoke({ messages: [{ role: "user", content: "hi" }] });
    expect(ran).toEqual([]);
    expect(shownTo(model)[0]).toMatch(/onbehalf refused get_customer: .*ERR_NO_IDENTITY/);
    const refusal = model.calls.at(-1)?.messages.find((m) => ToolMessage.isInstance(m));
    expect(ToolMessage.isInstance(refusal) && refusal.status).toBe("error");
    await gov.runAs(alice, { agent: "bot" }, () => governedTool(gov, getCustomer).invoke({ id: "c-9" }));
    expect(ran).toEqual(["get_customer:c-9"]);
  });

  it("throws the OnbehalfError (as the cause of LangChain's MiddlewareError) when onDeny is throw", async () => {
    const { readEmail } = fixtures();
    const model = fakeModel().respondWithTools([{ name: "read_email", args: { mailbox: "x" } }]);
    const agent = createAgent({
      model,
      tools: [readEmail],
      middleware: [onbehalfMiddleware(gov, { onDeny: "throw" })],
    });
    await expect(
      gov.runAs(bob, { agent: "bot" }, () => agent.invoke({ messages: [{ role: "user", content: "hi" }] })),
    ).rejects.toMatchObject({ cause: { code: "ERR_POLICY_DENIED" } });
  });

  it("redacts each text block of a content-block result, and withholds prose and images beside them", async () => {
    const blocks = tool(
      async () => [
        { type: "text", text: JSON.stringify({ id: "c-1", ssn: customer.ssn }) },
        { type: "text", text: `and the SSN again: ${customer.ssn}` },
        { type: "image", url: "https://crm.example/ssn-card.png" },
      ],
      { name: "get_customer", description: "Look up a customer", schema: z.object({ id: z.string() }) },
    );
    const governed = governedTool(gov, blocks);
    const out = await gov.runAs(alice, { agent: "bot" }, () => governed.invoke({ id: "c-1" }));
    expect(JSON.stringify(out)).not.toContain(customer.ssn);
    const [first, second, third] = out as { type: string; text: string }[];
    expect(JSON.parse(first!.text)).toEqual({ id: "c-1", ssn: "[REDACTED]" });
    expect(second!.text).toMatch(/^\[withheld by onbehalf: plain text from get_customer/);
    expect(third).toMatchObject({
      type: "text",
      text: expect.stringMatching(/^\[withheld by onbehalf: binary data/),
    });
  });
});
