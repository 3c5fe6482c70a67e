/**
 * Vercel AI SDK (`ai`, v5 to v7): govern a `ToolSet`'s `execute`. Identity: the bound run (`gov.runAs`), else
 * the call's context under `onbehalf` (`experimental_context` in v5/v6, `context` in v7). An `ask` decision
 * opens an approval in `gov.approvals` and becomes the tool's `needsApproval` (v6+), so the SDK pauses with a
 * `tool-approval-request`. The call runs only once an approver (not the requester) approved it through
 * `gov.approvals`: a `tool-approval-response` in the messages comes from the end user, who may have written it,
 * so it only resumes the run. The AI SDK turns an error thrown by `execute` into a `tool-error` the model
 * reads, and so does a refusal here.
 */
import type { Tool, ToolExecutionOptions, ToolSet } from "ai";
import type { DelegateOptions, RunContext } from "../context/run.js";
import type { Governor } from "../govern/governor.js";
import {
  type AdapterOptions,
  asSubagent,
  type CallOptions,
  DecidedAhead,
  declareTool,
  governCall,
  runIn,
  type ToolPolicy,
} from "./common.js";

export { CONTEXT_KEY, type OnDeny, runFor } from "./common.js";

/**
 * Options of {@link governTools}.
 *
 * @example
 * governTools(gov, tools, { policy: { issue_refund: { required_scopes: ["refunds:write"] } } });
 */
export interface GovernToolsOptions extends AdapterOptions {
  /** Policy fields declared in code, per tool name. */
  readonly policy?: Readonly<Record<string, ToolPolicy>>;
}

/** What v5/v6 (`experimental_context`) and v7 (`context`) pass to `execute` and `needsApproval`. */
type SdkCallOptions = Pick<ToolExecutionOptions, "toolCallId" | "messages"> & {
  experimental_context?: unknown;
  context?: unknown;
};

/** Attempts decided in `needsApproval`, per run and tool call id, for `execute` to finish. */
const decided = new DecidedAhead<RunContext>();

/**
 * Govern every tool of a tool set that the SDK executes (tools without `execute` are returned as they are).
 *
 * @example
 * const tools = governTools(gov, { get_customer: tool({ inputSchema, execute }) });
 * await gov.runAs(principal, { agent: "support-bot" }, () => generateText({ model, tools, prompt }));
 */
export function governTools<T extends ToolSet>(gov: Governor, tools: T, options: GovernToolsOptions = {}): T {
  const out: Record<string, Tool> = {};
  for (const [name, tool] of Object.entries(tools)) {
    declareTool(gov, name, options.policy?.[name]);
    out[name] = tool.execute === undefined ? (tool as Tool) : governed(gov, name, tool as Tool, options);
  }
  return out as T;
}

/**
 * Make a tool that runs a sub-agent (its `execute` calls another agent) run as that agent: the chain grows and
 * the scopes narrow to `grant.scopes` for every governed call inside.
 *
 * @example
 * const askMailer = subagentTool(tool({ inputSchema, execute: ({ task }) => mailer.generate({ prompt: task }) }),
 *   { agent: "mailer", scopes: ["email.read"] });
 */
export function subagentTool<T extends Tool>(
  tool: T,
  grant: DelegateOptions & { readonly agent: string },
): T {
  const execute = tool.execute;
  if (execute === undefined) return tool;
  return {
    ...tool,
    execute: (input: unknown, opts: SdkCallOptions) =>
      asSubagent(runIn(carrier(opts)), grant.agent, grant, () =>
        execute(input, opts as ToolExecutionOptions),
      ),
  } as T;
}

function governed(gov: Governor, name: string, tool: Tool, options: AdapterOptions): Tool {
  const execute = tool.execute!;
  const needsApproval = tool.needsApproval;
  const callOptions: CallOptions<SdkCallOptions> = {
    ...options,
    asError: (text) => {
      throw new Error(text);
    },
  };
  return {
    ...tool,
    needsApproval: async (input: unknown, opts: SdkCallOptions) => {
      const own =
        typeof needsApproval === "function"
          ? await needsApproval(input, opts as Parameters<typeof needsApproval>[1])
          : needsApproval === true;
      const run = runIn(carrier(opts));
      if (run === undefined) return own; // execute refuses: no identity, no call
      return (await decided.decide(gov, run, opts.toolCallId, run, name, input)) || own;
    },
    execute: (input: unknown, opts: SdkCallOptions) => {
      const run = runIn(carrier(opts));
      const attempt = decided.take(run, opts.toolCallId);
      return governCall(
        gov,
        run,
        name,
        input,
        () => settle(execute(input, opts as ToolExecutionOptions)),
        callOptions,
        opts,
        attempt,
      );
    },
  } as Tool;
}

function carrier(opts: SdkCallOptions | undefined): unknown {
  return opts?.context ?? opts?.experimental_context;
}

/** A streaming tool (an async iterable of outputs) settles on its last output. */
function settle(output: unknown): unknown {
  if (output === null || typeof output !== "object" || !(Symbol.asyncIterator in output)) return output;
  return (async () => {
    let last: unknown;
    for await (const value of output as AsyncIterable<unknown>) last = value;
    return last;
  })();
}
