/**
 * OpenAI Agents JS (`@openai/agents`): governed `FunctionTool`s, and agents whose hand-offs and `asTool()`
 * extend the chain. Identity: the bound run (`gov.runAs`), else `run(agent, input, { context: { onbehalf } })`.
 * A tool of a governed agent acts as that agent: in the bound run if it is that agent's (an `asTool()` sub-run
 * binds one), else in the run a hand-off in this SDK run gave the agent, else as a sub-agent of the bound or
 * carried run. An `ask` decision opens an approval in `gov.approvals` and becomes the SDK's `needsApproval`, so
 * the run stops with an interruption. The call runs only once an approver (not the requester) approved it
 * through `gov.approvals`; `state.approve(item)` resumes the run, and the call is then decided again under the
 * policy in force (a decision from before the interruption is not reused).
 */
import type { Agent, FunctionTool, RunContext as SdkRunContext, Tool } from "@openai/agents";
import { childContext, type DelegateOptions, type RunContext, tryCurrentRun } from "../context/run.js";
import type { Governor } from "../govern/governor.js";
import {
  type AdapterOptions,
  asRun,
  asSubagent,
  type CallOptions,
  CONTEXT_KEY,
  DecidedAhead,
  declareTool,
  governCall,
  type ToolPolicy,
} from "./common.js";

export { CONTEXT_KEY, type OnDeny, runFor } from "./common.js";

// biome-ignore lint/suspicious/noExplicitAny: the SDK's tools and agents are generic over the app's context
type AnyTool = FunctionTool<any, any, any>;
// biome-ignore lint/suspicious/noExplicitAny: as above
type AnyAgent = Agent<any, any>;

/**
 * Options of {@link governedTool}: `onDeny`, and policy fields declared in code.
 *
 * @example
 * governedTool(gov, refund, { policy: { required_scopes: ["refunds:write"] } });
 */
export interface GovernedToolOptions extends AdapterOptions {
  readonly policy?: ToolPolicy;
}

/**
 * What an agent may do when it acts as a sub-agent (after a hand-off, or as a tool).
 *
 * @example
 * governedAgent(gov, mailer, { scopes: ["email.read"], tier: "subagent" });
 */
export interface AgentGrant extends AdapterOptions {
  /** Scopes the agent is limited to; the chain's scopes are intersected with them. Omitted: inherited. */
  readonly scopes?: readonly string[];
  /** Default `subagent`. */
  readonly tier?: DelegateOptions["tier"];
}

const grants = new WeakMap<object, DelegateOptions>();
/** Per SDK run: the onbehalf run of each agent reached by a hand-off. */
const handedOff = new WeakMap<object, Map<object, RunContext>>();
/** Per SDK run: attempts decided in `needsApproval`, by call id, for `invoke` to finish. */
const decided = new DecidedAhead<object>();
/** Wrapped tools: what they wrap, and the sub-agent an `asTool()` tool runs. */
const wrapped = new WeakMap<object, { original: AnyTool; options: GovernedToolOptions; agent?: AnyAgent }>();

/**
 * Govern one function tool: decided (and `ask` turned into `needsApproval`), run, redacted and audited.
 *
 * @example
 * const getCustomer = governedTool(gov, tool({ name: "get_customer", parameters, execute }));
 */
export function governedTool<T extends AnyTool>(
  gov: Governor,
  tool: T,
  options: GovernedToolOptions = {},
): T {
  declareTool(gov, tool.name, options.policy);
  return bind(gov, tool, undefined, options);
}

/**
 * Govern an agent: its function tools act as this agent, a hand-off from it makes the target a sub-agent
 * in the chain, and `agent.asTool()` (called after this) runs the agent as a sub-agent with `grant.scopes`.
 * Returns the same agent.
 *
 * @example
 * const mailer = governedAgent(gov, new Agent({ name: "mailer", tools: [readEmail] }), { scopes: ["email.read"] });
 * const triage = governedAgent(gov, new Agent({ name: "triage", handoffs: [mailer] }));
 */
export function governedAgent<A extends AnyAgent>(gov: Governor, agent: A, grant: AgentGrant = {}): A {
  grants.set(agent, {
    ...(grant.scopes === undefined ? {} : { scopes: grant.scopes }),
    ...(grant.tier === undefined ? {} : { tier: grant.tier }),
  });
  agent.tools = agent.tools.map((t: Tool) => (t.type === "function" ? bind(gov, t, agent, grant) : t));
  agent.on("agent_handoff", (sdkRun: SdkRunContext, next: AnyAgent) => {
    const parent = runIn(sdkRun, agent);
    if (parent === undefined) return;
    const chains = handedOff.get(sdkRun) ?? new Map<object, RunContext>();
    chains.set(next, childContext(parent, next.name, grants.get(next) ?? {}));
    handedOff.set(sdkRun, chains);
  });
  const asTool = agent.asTool.bind(agent) as (options: unknown) => AnyTool;
  Object.assign(agent, {
    asTool: (options: unknown) => {
      const tool = asTool(options);
      wrapped.set(tool, { original: tool, options: grant, agent });
      return bind(gov, tool, undefined, grant);
    },
  });
  return agent;
}

/** The onbehalf run for a call by `owner` in this SDK run, in the order the module comment gives. */
function runIn(sdkRun: SdkRunContext | undefined, owner: AnyAgent | undefined): RunContext | undefined {
  const bound = tryCurrentRun();
  if (owner !== undefined && bound?.agent !== owner.name) {
    const reached = sdkRun === undefined ? undefined : handedOff.get(sdkRun)?.get(owner);
    if (reached !== undefined) return reached;
  }
  const base = bound ?? asRun((sdkRun?.context as Record<string, unknown> | undefined)?.[CONTEXT_KEY]);
  if (base === undefined || owner === undefined || base.agent === owner.name) return base;
  return childContext(base, owner.name, grants.get(owner) ?? {});
}

function bind<T extends AnyTool>(
  gov: Governor,
  tool: T,
  owner: AnyAgent | undefined,
  options: GovernedToolOptions,
): T {
  const known = wrapped.get(tool);
  const original = known?.original ?? tool;
  const opts = known?.options ?? options;
  const name = original.name;
  const sub = known?.agent;
  if (sub !== undefined) {
    const out: AnyTool = {
      ...original,
      invoke: (sdkRun, input, details) =>
        asSubagent(runIn(sdkRun, owner), sub.name, grants.get(sub) ?? {}, () =>
          original.invoke(sdkRun, input, details),
        ),
    };
    wrapped.set(out, { original, options: opts, agent: sub });
    return out as T;
  }
  const callOptions: CallOptions<{ sdkRun: SdkRunContext; callId: string | undefined }> = {
    ...opts,
    asError: (text) => text,
  };
  const out: AnyTool = {
    ...original,
    needsApproval: async (sdkRun, input, callId) => {
      const own = await original.needsApproval(sdkRun, input, callId);
      const asks = await decided.decide(gov, sdkRun, callId, runIn(sdkRun, owner), name, parseArgs(input));
      return asks || own;
    },
    invoke: (sdkRun, input, details) => {
      const callId = details?.toolCall?.callId;
      const attempt = decided.take(sdkRun, callId);
      return governCall(
        gov,
        attempt?.run ?? runIn(sdkRun, owner),
        name,
        parseArgs(input),
        () => original.invoke(sdkRun, input, details),
        callOptions,
        { sdkRun, callId },
        attempt,
      );
    },
  };
  wrapped.set(out, { original, options: opts });
  return out as T;
}

/** `invoke` gets the model's JSON text; `needsApproval` the parsed arguments: both are decided on the value. */
function parseArgs(input: unknown): unknown {
  if (typeof input !== "string") return input;
  try {
    return JSON.parse(input);
  } catch {
    return input;
  }
}
