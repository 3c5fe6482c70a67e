/**
 * Mastra (`@mastra/core` v1): govern `createTool` tools, and run sub-agents (`new Agent({ agents })`) in the
 * chain with their own scopes. Identity: the `requestContext` entry `onbehalf` when present (Mastra v1's
 * `requestContext`, called `runtimeContext` before v1), else the bound run (`gov.runAs`). The request context
 * comes first here because it is what Mastra hands every tool explicitly; a sub-agent gets its own copy with
 * the narrower run in it. A refused call returns Mastra's tool-error shape `{ error: true, message }`.
 */
import type { Agent } from "@mastra/core/agent";
import { RequestContext } from "@mastra/core/request-context";
import {
  childContext,
  type DelegateOptions,
  type RunContext,
  tryCurrentRun,
  withContext,
} from "../context/run.js";
import type { Governor } from "../govern/governor.js";
import {
  type AdapterOptions,
  asRun,
  type CallOptions,
  CONTEXT_KEY,
  declareTool,
  governCall,
  type ToolPolicy,
} from "./common.js";

export { CONTEXT_KEY, type OnDeny, runFor } from "./common.js";

/** What the adapter needs of a Mastra tool (`createTool` / `new Tool`): an id and an optional execute. */
interface AnyTool {
  readonly id: string;
  // biome-ignore lint/suspicious/noExplicitAny: Mastra's tools are generic over their schemas and context
  execute?: ((input: any, context: any) => Promise<unknown>) | undefined;
}
type Execute = NonNullable<AnyTool["execute"]>;
/** What a tool's execute, and an agent's generate/stream options, may carry. */
type WithRequestContext = { requestContext?: { get(key: string): unknown } } | undefined;

/**
 * Options of {@link governedTool} and {@link governTools}: `onDeny`, and policy fields declared in code.
 *
 * @example
 * governTools(gov, { issue_refund: refund }, { policy: { required_scopes: ["refunds:write"] } });
 */
export interface GovernedToolOptions extends AdapterOptions {
  readonly policy?: ToolPolicy;
}

/**
 * Govern one tool (under its `id`): decided, run, redacted and audited.
 *
 * @example
 * const getCustomer = governedTool(gov, createTool({ id: "get_customer", inputSchema, execute }));
 */
export function governedTool<T extends AnyTool>(
  gov: Governor,
  tool: T,
  options: GovernedToolOptions = {},
): T {
  return governAs(gov, tool.id, tool, options);
}

/**
 * Govern every tool of an agent's `tools` record, each under the name the model calls it by (its key).
 *
 * @example
 * const agent = new Agent({ name: "support-bot", model, tools: governTools(gov, { get_customer: getCustomer }) });
 */
export function governTools<T extends Record<string, AnyTool>>(
  gov: Governor,
  tools: T,
  options: GovernedToolOptions = {},
): T {
  const out: Record<string, AnyTool> = {};
  for (const [name, tool] of Object.entries(tools)) out[name] = governAs(gov, name, tool, options);
  return out as T;
}

/**
 * Make an agent act as a sub-agent when another agent (or code acting for one) calls it: the chain grows by
 * its name and its governed tools get at most `grant.scopes`. Returns the same agent.
 *
 * @example
 * const mailer = subagent(new Agent({ name: "mailer", model, tools }), { scopes: ["email.read"] });
 * const supervisor = new Agent({ name: "supervisor", model, agents: { mailer } });
 */
export function subagent<A extends Agent>(agent: A, grant: DelegateOptions = {}): A {
  for (const method of ["generate", "stream"] as const) {
    const original = (agent[method] as (...a: unknown[]) => unknown).bind(agent);
    Object.assign(agent, {
      [method]: (messages: unknown, options: WithRequestContext = {}) => {
        const parent = runIn(options);
        if (parent === undefined || parent.agent === agent.name) return original(messages, options);
        const child = childContext(parent, agent.name, grant);
        const requestContext = new RequestContext();
        for (const [key, value] of entriesOf(options?.requestContext)) requestContext.set(key, value);
        requestContext.set(CONTEXT_KEY, child);
        return withContext(child, () => original(messages, { ...options, requestContext }));
      },
    });
  }
  return agent;
}

function governAs<T extends AnyTool>(gov: Governor, name: string, tool: T, options: GovernedToolOptions): T {
  const execute = tool.execute;
  if (execute === undefined) return tool;
  declareTool(gov, name, options.policy);
  const callOptions: CallOptions<undefined> = {
    ...options,
    asError: (message) => ({ error: true, message }),
  };
  const governed: Execute = (input, context) =>
    governCall(
      gov,
      runIn(context as WithRequestContext),
      name,
      input,
      () => execute(input, context),
      callOptions,
      undefined,
    );
  return Object.assign(Object.create(Object.getPrototypeOf(tool) as object) as T, tool, {
    execute: governed,
  });
}

function runIn(carrier: WithRequestContext): RunContext | undefined {
  return asRun(carrier?.requestContext?.get(CONTEXT_KEY)) ?? tryCurrentRun();
}

function entriesOf(requestContext: unknown): Iterable<readonly [string, unknown]> {
  const entries = (requestContext as { entries?: () => Iterable<readonly [string, unknown]> } | undefined)
    ?.entries;
  return typeof entries === "function" ? entries.call(requestContext) : [];
}
