/**
 * Adapter overhead: what each framework adapter adds on top of the governor's own pipeline, with no model
 * round trip. For every adapter the same tool is called through the framework's own entry point (a
 * `FunctionTool`'s `invoke`, an AI SDK tool's `execute`, a LangChain tool's `invoke`, the LangChain middleware's
 * `wrapToolCall`, a Mastra tool's `execute`, an MCP `registerTool` handler) three ways in the same rounds:
 * bare; inside a bare `gov.governed()` (the pipeline called directly, the baseline); and through the adapter.
 * The adapter's overhead is the adapter's p50 minus the baseline's: identity resolution, argument parsing,
 * approval hooks and result shapes, with the framework's and the pipeline's own cost on both sides.
 * (Measuring the baseline around the framework call, not around a bare function, matters: the pipeline costs
 * ~1.5 µs more around the OpenAI Agents SDK's `invoke` than around a bare function, adapter or not.)
 */
import { ToolMessage } from "@langchain/core/messages";
import { tool as lcTool } from "@langchain/core/tools";
import { createTool } from "@mastra/core/tools";
import { RunContext as AgentsRunContext, tool as agentsTool } from "@openai/agents";
import { tool as aiTool } from "ai";
import { z } from "zod";
import { governTools } from "../src/adapters/ai-sdk.js";
import { governedTool as governedLangchainTool, onbehalfMiddleware } from "../src/adapters/langchain.js";
import { governedTool as governedMastraTool } from "../src/adapters/mastra.js";
import { governedHandler } from "../src/adapters/mcp-server.js";
import { governedTool as governedAgentsTool } from "../src/adapters/openai-agents.js";
import type { Governor } from "../src/govern/governor.js";
import { benchGovernor, principal } from "./govern.js";
import { type Finding, fmt, medianOf, timed } from "./harness.js";

type Pair = { readonly bare: () => Promise<unknown>; readonly adapter: () => Promise<unknown> };

/** The same lookup through each framework's tool entry point, bare and governed. */
function pairs(gov: Governor): Record<string, Pair> {
  const lookup = async ({ id }: { id: string }) => ({ id, name: "Ada" });
  const schema = z.object({ id: z.string() });
  const args = { id: "c-1" };

  const agentsBare = agentsTool({
    name: "get_customer",
    description: "",
    parameters: schema,
    execute: lookup,
  });
  const agentsGoverned = governedAgentsTool(gov, agentsBare);
  const sdkRun = new AgentsRunContext({});
  const json = JSON.stringify(args);

  const aiBare = { get_customer: aiTool({ inputSchema: schema, execute: lookup }) };
  const aiGoverned = governTools(gov, aiBare);
  const aiOptions = { toolCallId: "call-1", messages: [] };

  const lcBare = lcTool(lookup, { name: "get_customer", description: "", schema });
  const lcGoverned = governedLangchainTool(gov, lcBare);
  const middleware = onbehalfMiddleware(gov);
  const wrap = middleware.wrapToolCall!;
  const toolCall = { name: "get_customer", args, id: "call-1", type: "tool_call" as const };
  const request = {
    toolCall,
    tool: undefined,
    state: { messages: [] },
    runtime: {},
  } as unknown as Parameters<typeof wrap>[0];
  const handler = async () =>
    new ToolMessage({
      content: JSON.stringify(await lookup(args)),
      tool_call_id: "call-1",
      name: "get_customer",
    });

  const mastraBare = createTool({
    id: "get_customer",
    description: "",
    inputSchema: schema,
    execute: lookup,
  });
  const mastraGoverned = governedMastraTool(gov, mastraBare);
  const mastraContext = {} as never;

  const mcpBare = async ({ id }: { id: string }, _extra: object) => ({
    content: [{ type: "text" as const, text: JSON.stringify(await lookup({ id })) }],
  });
  const mcpGoverned = governedHandler(gov, "get_customer", mcpBare);
  const authInfo = { token: "t", clientId: "bench-bot", scopes: [], extra: { principal } };

  return {
    "openai-agents (FunctionTool.invoke)": {
      bare: () => agentsBare.invoke(sdkRun, json),
      adapter: () => agentsGoverned.invoke(sdkRun, json),
    },
    "ai-sdk (tool.execute)": {
      bare: () => Promise.resolve(aiBare.get_customer.execute!(args, aiOptions)),
      adapter: () => Promise.resolve(aiGoverned.get_customer.execute!(args, aiOptions)),
    },
    "langchain (governedTool.invoke)": {
      bare: () => lcBare.invoke(args),
      adapter: () => lcGoverned.invoke(args),
    },
    "langchain (middleware wrapToolCall)": {
      bare: () => handler(),
      adapter: () => Promise.resolve(wrap(request, handler)),
    },
    "mastra (tool.execute)": {
      bare: () => mastraBare.execute!(args, mastraContext),
      adapter: () => mastraGoverned.execute!(args, mastraContext),
    },
    "mcp-server (registerTool handler)": {
      bare: () => mcpBare(args, { authInfo }),
      adapter: () => mcpGoverned(args, { authInfo }),
    },
  };
}

export async function benchAdapters(): Promise<Finding[]> {
  const gov = await benchGovernor();
  const adapters = pairs(gov);
  const args = { id: "c-1" };
  /** The baseline: the framework's bare call inside a bare gov.governed(). */
  const direct = Object.fromEntries(
    Object.entries(adapters).map(([name, p]) => {
      const governed = gov.governed({ name: "get_customer", execute: p.bare });
      return [name, () => governed(args)];
    }),
  );
  const n = 10_000;
  const rounds: Record<string, { added: number; bare: number; direct: number; adapter: number }>[] = [];
  await gov.runAs(principal, { agent: "bench-bot" }, async () => {
    for (let i = 0; i < 2000; i++) {
      for (const [name, p] of Object.entries(adapters)) await Promise.all([p.adapter(), direct[name]!()]);
    }
    for (let r = 0; r < 5; r++) {
      const round: (typeof rounds)[number] = {};
      for (const [name, p] of Object.entries(adapters)) {
        const b = await timed(`${name} bare`, n, p.bare);
        const d = await timed(`${name} in gov.governed()`, n, direct[name]!);
        const a = await timed(`${name} adapter`, n, p.adapter);
        round[name] = { added: a.p50 - d.p50, bare: b.p50, direct: d.p50, adapter: a.p50 };
      }
      rounds.push(round);
    }
  });
  await gov.flush();
  await gov.close();

  return Object.keys(adapters).map((name) => {
    const med = (k: "added" | "bare" | "direct" | "adapter") =>
      medianOf(rounds.map((r) => r[name]?.[k] ?? Number.NaN));
    const added = med("added");
    return {
      what: `${name}: adapter overhead over gov.governed()`,
      measured:
        `${fmt(added)} µs p50 (bare ${fmt(med("bare"))}, in gov.governed() ${fmt(med("direct"))}, ` +
        `adapter ${fmt(med("adapter"))} µs; median of 5 rounds × ${n / 1000}k)`,
      target: "≤ 2 µs",
      ok: added <= 2,
    };
  });
}
