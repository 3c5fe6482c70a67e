/**
 * LangChain.js: govern one `tool()` / `DynamicStructuredTool`, or every tool of a `createAgent` agent at once
 * with {@link onbehalfMiddleware} (`wrapToolCall`). Identity: the bound run (`gov.runAs`), else the agent's
 * runtime context under `onbehalf` (`agent.invoke(input, { context: { onbehalf: run } })`). A refused call
 * becomes an error `ToolMessage` the model reads.
 */
import { ToolMessage } from "@langchain/core/messages";
import { DynamicStructuredTool, type StructuredToolInterface } from "@langchain/core/tools";
import { createMiddleware } from "langchain";
import type { DelegateOptions } from "../context/run.js";
import type { Governor } from "../govern/governor.js";
import {
  type AdapterOptions,
  asSubagent,
  type CallOptions,
  declareTool,
  governCall,
  type ResultShape,
  runIn,
  type ToolPolicy,
} from "./common.js";

export { CONTEXT_KEY, type OnDeny, runFor } from "./common.js";

/**
 * Options of {@link governedTool}: `onDeny`, and policy fields declared in code.
 *
 * @example
 * governedTool(gov, refund, { onDeny: "throw", policy: { required_scopes: ["refunds:write"] } });
 */
export interface GovernedToolOptions extends AdapterOptions {
  readonly policy?: ToolPolicy;
}

/** Tools that must not be governed again by the middleware: already governed, or running a sub-agent. */
const passThrough = new WeakSet<object>();

/**
 * Govern one tool: decided, run, redacted and audited. A refusal is an error `ToolMessage` in an agent (the
 * bare text when invoked directly), or a throw with `onDeny: "throw"`.
 *
 * @example
 * const getCustomer = governedTool(gov, tool(async ({ id }) => db.customer(id), { name: "get_customer", schema }));
 */
export function governedTool(
  gov: Governor,
  tool: StructuredToolInterface,
  options: GovernedToolOptions = {},
): DynamicStructuredTool {
  declareTool(gov, tool.name, options.policy);
  const call = callOf(tool);
  const callOptions: CallOptions<unknown> = {
    ...options,
    ...messageShape,
    // an error ToolMessage when LangGraph's tool node called it with a tool call id, else the text
    asError: (text, config) => {
      const id = (config as { toolCallId?: unknown } | undefined)?.toolCallId;
      if (typeof id !== "string") return text;
      return new ToolMessage({ content: text, tool_call_id: id, name: tool.name, status: "error" });
    },
  };
  const out = new DynamicStructuredTool({
    ...fieldsOf(tool),
    func: (args: unknown, runManager, config) =>
      governCall(
        gov,
        runIn(contextOf(config)),
        tool.name,
        args,
        () => call(args, runManager, config),
        callOptions,
        config,
      ),
  });
  passThrough.add(out);
  return out;
}

/**
 * Middleware for `createAgent` (langchain v1) that governs every tool call of the agent.
 *
 * @example
 * const agent = createAgent({ model, tools: [getCustomer], middleware: [onbehalfMiddleware(gov)] });
 * await gov.runAs(principal, { agent: "support-bot" }, () => agent.invoke({ messages }));
 */
export function onbehalfMiddleware(gov: Governor, options: AdapterOptions = {}) {
  const callOptions: CallOptions<{ name: string; id?: string | undefined }> = {
    ...options,
    ...messageShape,
    asError: (text, { name, id = "" }) =>
      new ToolMessage({ content: text, tool_call_id: id, name, status: "error" }),
  };
  return createMiddleware({
    name: "onbehalf",
    wrapToolCall: (request, handler) => {
      if (request.tool !== undefined && passThrough.has(request.tool)) return handler(request);
      const { name, args } = request.toolCall;
      return governCall(
        gov,
        runIn(request.runtime.context),
        name,
        args,
        () => handler(request),
        callOptions,
        request.toolCall,
      ) as ReturnType<typeof handler>;
    },
  });
}

/**
 * A `ToolMessage` result (or a tool's own list of content blocks): an error status is a failure; the policy
 * reads (and redacts) its content: JSON text, or each content block (a text block's text; any other block, an
 * image say, is binary the paths cannot check, withheld while redacting).
 */
const messageShape: ResultShape = {
  failed: (m) => (ToolMessage.isInstance(m) && m.status === "error" ? String(m.content) : undefined),
  view: (m) => {
    if (isBlocks(m)) return blocksView(m);
    if (!ToolMessage.isInstance(m)) return m;
    return isBlocks(m.content) ? blocksView(m.content) : parse(m.content);
  },
  redacted: (m, output) => {
    if (isBlocks(m)) return blocksOf(m, output);
    if (!ToolMessage.isInstance(m)) return output;
    const content = isBlocks(m.content)
      ? blocksOf(m.content, output)
      : typeof output === "string"
        ? output
        : JSON.stringify(output);
    return new ToolMessage({ ...m, content: content as ToolMessage["content"] });
  },
};

type Block = { readonly type: string; readonly text?: unknown };

function isBlocks(value: unknown): value is readonly Block[] {
  return (
    Array.isArray(value) &&
    value.length > 0 &&
    value.every((b) => typeof b === "object" && b !== null && typeof (b as Block).type === "string")
  );
}

function blocksView(blocks: readonly Block[]): unknown[] {
  return blocks.map((b) => (isTextBlock(b) ? parse(b.text) : NOT_TEXT));
}

/** The blocks with what the policy lets the model see: text blocks' text, a withheld block's notice. */
function blocksOf(blocks: readonly Block[], output: unknown): unknown[] {
  const shown = Array.isArray(output) ? output : [output];
  return blocks.map((b, i) => {
    const v = shown[i];
    if (isTextBlock(b)) return { ...b, text: typeof v === "string" ? v : JSON.stringify(v) };
    return v === NOT_TEXT ? b : { type: "text", text: String(v) };
  });
}

/** What a non-text content block is to the policy: binary data it cannot check (withheld when redacting). */
const NOT_TEXT = new Uint8Array(0);

function isTextBlock(b: unknown): b is { type: "text"; text: string } {
  return (
    typeof b === "object" &&
    b !== null &&
    (b as { type?: unknown }).type === "text" &&
    typeof (b as { text?: unknown }).text === "string"
  );
}

/**
 * Make a tool that runs a sub-agent (e.g. calls another `createAgent` agent) run as that agent: the chain
 * grows and scopes narrow to `grant.scopes` for every governed call inside. The middleware does not govern
 * the sub-agent tool itself; the sub-agent's own tools are governed.
 *
 * @example
 * const askMailer = subagentTool(tool(({ task }) => mailer.invoke({ messages: task }), { name: "ask_mailer", schema }),
 *   { agent: "mailer", scopes: ["email.read"] });
 */
export function subagentTool(
  tool: StructuredToolInterface,
  grant: DelegateOptions & { readonly agent: string },
): DynamicStructuredTool {
  const call = callOf(tool);
  const out = new DynamicStructuredTool({
    ...fieldsOf(tool),
    func: (args: unknown, runManager, config) =>
      asSubagent(runIn(contextOf(config)), grant.agent, grant, () => call(args, runManager, config)),
  });
  passThrough.add(out);
  return out;
}

type Func = DynamicStructuredTool["func"];

/** Call a tool's own function (no second tool invocation for a `tool()`), else invoke it. */
function callOf(tool: StructuredToolInterface): Func {
  if (tool instanceof DynamicStructuredTool) return tool.func.bind(tool);
  return (args, _runManager, config) => tool.invoke(args as never, config);
}

/** The fields of `tool` that a wrapper keeps: what the model sees and how the output is formatted. */
function fieldsOf(tool: StructuredToolInterface) {
  const { responseFormat } = tool as { responseFormat?: "content" | "content_and_artifact" };
  return {
    name: tool.name,
    description: tool.description,
    schema: tool.schema,
    returnDirect: tool.returnDirect,
    ...(responseFormat === undefined ? {} : { responseFormat }),
  };
}

/** LangGraph passes the agent's runtime context to tools in their config. */
function contextOf(config: unknown): unknown {
  return (config as { context?: unknown } | undefined)?.context;
}

/** A tool message's content as the policy sees it: parsed when it is JSON. */
function parse(content: unknown): unknown {
  if (typeof content !== "string") return content;
  try {
    return JSON.parse(content);
  } catch {
    return content;
  }
}
