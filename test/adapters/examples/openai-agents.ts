/** The OpenAI Agents example of docs/frameworks.md (the region between the markers is the doc's code block). */
// #region doc
import { Agent, type Model, run, tool } from "@openai/agents";
import { z } from "zod";
import { governedAgent } from "../../../src/adapters/openai-agents.js";
import type { Governor, Principal } from "../../../src/index.js";

export async function askSupport(gov: Governor, principal: Principal, model: Model, question: string) {
  const getCustomer = tool({
    name: "get_customer",
    description: "Look up a customer by id",
    parameters: z.object({ id: z.string() }),
    execute: async ({ id }) => ({ id, name: "Ada", ssn: "078-05-1120" }),
  });
  const readEmail = tool({
    name: "read_email",
    description: "Read the user's mailbox",
    parameters: z.object({ mailbox: z.string() }),
    execute: async ({ mailbox }) => `3 new messages in ${mailbox}`,
  });
  // the mailer acts with email.read at most, whatever the human may do
  const mailer = governedAgent(gov, new Agent({ name: "mailer", model, tools: [readEmail, getCustomer] }), {
    scopes: ["email.read"],
  });
  const triage = governedAgent(
    gov,
    new Agent({ name: "triage", model, tools: [getCustomer], handoffs: [mailer] }),
  );
  const result = await gov.runAs(principal, { agent: "triage" }, () => run(triage, question));
  return result.finalOutput;
}
// #endregion
