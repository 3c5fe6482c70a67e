/** The AI SDK example of docs/frameworks.md (the region between the markers is the doc's code block). */
// #region doc
import { generateText, type LanguageModel, stepCountIs, tool } from "ai";
import { z } from "zod";
import { governTools, runFor } from "../../../src/adapters/ai-sdk.js";
import type { Governor, Principal } from "../../../src/index.js";

export async function askSupport(gov: Governor, principal: Principal, model: LanguageModel, prompt: string) {
  const tools = governTools(gov, {
    get_customer: tool({
      description: "Look up a customer by id",
      inputSchema: z.object({ id: z.string() }),
      execute: async ({ id }) => ({ id, name: "Ada", ssn: "078-05-1120" }),
    }),
    issue_refund: tool({
      description: "Refund an amount",
      inputSchema: z.object({ amount: z.number() }),
      execute: async ({ amount }) => `refunded ${amount}`,
    }),
  });
  // the human rides in the call's context here; gov.runAs(principal, ..., () => generateText(...)) works too
  const result = await generateText({
    model,
    tools,
    prompt,
    stopWhen: stepCountIs(5),
    experimental_context: { onbehalf: runFor(principal, { agent: "support-bot" }) },
  });
  // a refund over 500 stops here with a tool-approval-request, and waits in gov.approvals: once a manager
  // approved it there (gov.approvals.decide), call again and the refund runs, once (all of it audited)
  return { text: result.text, approvals: result.content.filter((p) => p.type === "tool-approval-request") };
}
// #endregion
