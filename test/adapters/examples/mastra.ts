/** The Mastra example of docs/frameworks.md (the region between the markers is the doc's code block). */
// #region doc
import { Agent } from "@mastra/core/agent";
import type { MastraModelConfig } from "@mastra/core/llm";
import { RequestContext } from "@mastra/core/request-context";
import { createTool } from "@mastra/core/tools";
import { z } from "zod";
import { governTools, runFor, subagent } from "../../../src/adapters/mastra.js";
import type { Governor, Principal } from "../../../src/index.js";

export async function askSupport(
  gov: Governor,
  principal: Principal,
  model: MastraModelConfig,
  question: string,
) {
  const readEmail = createTool({
    id: "read_email",
    description: "Read the user's mailbox",
    inputSchema: z.object({ mailbox: z.string() }),
    execute: async ({ mailbox }) => ({ summary: `3 new messages in ${mailbox}` }),
  });
  const mailer = subagent(
    new Agent({
      id: "mailer",
      name: "mailer",
      description: "Reads mail",
      instructions: "You read mail.",
      model,
      tools: governTools(gov, { read_email: readEmail }),
    }),
    { scopes: ["email.read"] },
  );
  const supervisor = new Agent({
    id: "supervisor",
    name: "supervisor",
    instructions: "Help.",
    model,
    agents: { mailer },
  });
  const requestContext = new RequestContext();
  requestContext.set("onbehalf", runFor(principal, { agent: "supervisor" }));
  const result = await supervisor.generate(question, { requestContext });
  return result.text;
}
// #endregion
