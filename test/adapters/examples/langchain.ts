/** The LangChain example of docs/frameworks.md (the region between the markers is the doc's code block). */
// #region doc
import type { BaseChatModel } from "@langchain/core/language_models/chat_models";
import { createAgent, tool } from "langchain";
import { z } from "zod";
import { onbehalfMiddleware, subagentTool } from "../../../src/adapters/langchain.js";
import type { Governor, Principal } from "../../../src/index.js";

export async function askSupport(
  gov: Governor,
  principal: Principal,
  model: BaseChatModel,
  question: string,
) {
  const readEmail = tool(async ({ mailbox }) => `3 new messages in ${mailbox}`, {
    name: "read_email",
    description: "Read the user's mailbox",
    schema: z.object({ mailbox: z.string() }),
  });
  const mailer = createAgent({ model, tools: [readEmail], middleware: [onbehalfMiddleware(gov)] });
  const askMailer = subagentTool(
    tool(
      async ({ task }) => {
        const { messages } = await mailer.invoke({ messages: [{ role: "user", content: task }] });
        return String(messages.at(-1)?.content);
      },
      { name: "ask_mailer", description: "Delegate a mail task", schema: z.object({ task: z.string() }) },
    ),
    { agent: "mailer", scopes: ["email.read"] },
  );
  const supervisor = createAgent({ model, tools: [askMailer], middleware: [onbehalfMiddleware(gov)] });
  const { messages } = await gov.runAs(principal, { agent: "supervisor" }, () =>
    supervisor.invoke({ messages: [{ role: "user", content: question }] }),
  );
  return String(messages.at(-1)?.content);
}
// #endregion
