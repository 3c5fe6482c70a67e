/**
 * What the framework adapters share, so each of them stays a thin map from its framework's tool shape:
 * where a call's run comes from, the one governed call (begin → run or refuse → finish, all through the
 * governor's pipeline), delegation to a sub-agent, and what a refused call tells the model.
 *
 * Not a subpath export of its own: each adapter re-exports what its users need.
 */
import { digestArgs, type Source } from "../audit/record.js";
import {
  childContext,
  type DelegateOptions,
  type RunContext,
  type RunOptions,
  runContextOf,
  tryCurrentRun,
  withContext,
} from "../context/run.js";
import { isOnbehalfError, OnbehalfError } from "../errors.js";
import type { GovernedToolDefinition, Governor } from "../govern/governor.js";
import { type CallAttempt, refusal } from "../govern/pipeline.js";
import type { Principal } from "../identity/principal.js";
import { checkedLayer } from "../policy/capabilities.js";

/**
 * What a refused call gives the model: a tool error it reads (`error-result`, the default) or a throw.
 *
 * @example
 * governTools(gov, tools, { onDeny: "throw" });
 */
export type OnDeny = "error-result" | "throw";

/** Options every adapter takes. */
export interface AdapterOptions {
  /** `error-result` (default): the model reads why the call was refused. `throw`: the run fails. */
  readonly onDeny?: OnDeny;
}

/** Policy fields a tool may declare in code; they add to the config's entry for the same tool. */
export type ToolPolicy = Partial<
  Pick<
    GovernedToolDefinition<unknown, unknown>,
    "required_scopes" | "sensitivity" | "redact" | "description" | "input_schema"
  >
>;

/**
 * The key under which a framework's per-run context object may carry the run (`{ onbehalf: run }`).
 *
 * @example
 * requestContext.set(CONTEXT_KEY, runFor(principal, { agent: "supervisor" }));
 */
export const CONTEXT_KEY = "onbehalf";

/**
 * A run for `principal` through `options.agent`, to carry in a framework's own context object when the agent
 * run is not wrapped in `gov.runAs()`.
 *
 * @example
 * await run(agent, "hi", { context: { onbehalf: runFor(principal, { agent: "support-bot" }) } });
 */
export function runFor(principal: Principal, options: RunOptions): RunContext {
  const capabilities =
    options.capabilities === undefined ? [] : [checkedLayer(options.agent, options.capabilities)];
  return runContextOf(principal, {
    chain: [options.agent],
    tier: options.tier ?? "interactive",
    ...(options.traceId === undefined ? {} : { traceId: options.traceId }),
    ...(options.tenant === undefined ? {} : { tenant: options.tenant }),
    capabilities,
  });
}

/**
 * The run a call acts in: the bound run (`gov.runAs`, `delegate`) first, else the one a framework context
 * carries under {@link CONTEXT_KEY}. Anything that is not a run context counts as no identity.
 */
export function runIn(carrier?: unknown): RunContext | undefined {
  return tryCurrentRun() ?? asRun((carrier as Record<string, unknown> | null | undefined)?.[CONTEXT_KEY]);
}

/** `value` if it is a run context built by onbehalf (a principal, a chain, scopes as a Set), else undefined. */
export function asRun(value: unknown): RunContext | undefined {
  const r = value as Partial<RunContext> | null | undefined;
  return typeof r?.agent === "string" &&
    typeof r.principal?.user === "string" &&
    Array.isArray(r.chain) &&
    r.scopes instanceof Set
    ? (r as RunContext)
    : undefined;
}

/**
 * Run `fn` as sub-agent `agent` of `parent`: the chain grows, scopes narrow to `options.scopes`. With no
 * parent, `fn` runs unbound, so every governed call inside it is denied.
 */
export function asSubagent<T>(
  parent: RunContext | undefined,
  agent: string,
  options: DelegateOptions,
  fn: () => T,
): T {
  if (parent === undefined || parent.agent === agent) return fn();
  return withContext(childContext(parent, agent, options), fn);
}

/** Declare a tool's policy fields in code: they join the policy, adding to any earlier declaration. */
export function declareTool(gov: Governor, name: string, policy: ToolPolicy | undefined): void {
  if (policy !== undefined) gov.declare({ name, ...policy });
}

/** How a framework represents a tool's result, where it is not the plain output the policy reads. */
export interface ResultShape {
  /** A failure the framework returns rather than throws (an error `ToolMessage`, `isError`): its message. */
  readonly failed?: (result: unknown) => string | undefined;
  /** What the policy reads and redacts, e.g. the JSON inside a message. Default: the result itself. */
  readonly view?: (result: unknown) => unknown;
  /** The result to return when the post-transform changed the view. Default: the transformed view. */
  readonly redacted?: (result: unknown, output: unknown) => unknown;
}

/**
 * How an adapter calls {@link governCall}: built once per wrapped tool. `C` is a per-call value the adapter
 * passes along (the framework's call options, its tool call) for the callbacks that need it.
 */
export interface CallOptions<C> extends AdapterOptions, ResultShape {
  /** The framework's tool-error result carrying `text` (used when `onDeny` is `error-result`). */
  readonly asError: (text: string, call: C) => unknown;
  /** Passed to `gov.begin` (e.g. `{ source: "mcp" }`). */
  readonly begin?: { readonly source?: Source };
}

const NO_EXTRA = {};

/**
 * One governed call through the governor's pipeline: decide and audit (or take an `attempt` decided earlier,
 * if it allowed the call), refuse anything but allow, execute, post-transform and audit the outcome. An `ask`
 * runs only with an approval an approver gave through `gov.approvals` (taken once, and the call decided again
 * under the policy in force); the framework's own approval flow (a tool-approval response, `state.approve`)
 * only resumes the run, it approves nothing: its messages are the requester's. Without an approval the call
 * is refused with a reason the model reads, naming the approval waiting for a human. A refusal resolves to
 * `options.asError(text, call)` (or rejects with the `OnbehalfError` when `onDeny` is `throw`); the tool's own
 * errors are audited and rethrown.
 */
export async function governCall<C>(
  gov: Governor,
  run: RunContext | undefined,
  tool: string,
  args: unknown,
  execute: () => unknown,
  options: CallOptions<C>,
  call: C,
  attempt?: CallAttempt,
): Promise<unknown> {
  // An attempt decided in a needsApproval hook is for the arguments it saw: a resumed run may carry others.
  if (attempt !== undefined && !decidedFor(attempt, args)) attempt = undefined;
  try {
    // An attempt decided earlier (in a framework's needsApproval hook) is reused; one that asked goes to its
    // approval, and with one the call is decided again under the policy in force (the run may have been
    // paused for hours).
    attempt ??= await gov.begin(run, tool, args, options.begin ?? NO_EXTRA);
    if (attempt.decision.decision === "ask" && attempt.run !== undefined) {
      attempt = await approved(gov, attempt, attempt.run, tool, args, options.begin ?? NO_EXTRA);
    }
  } catch (e) {
    return refuse(tool, asRefusal(e), options, call);
  }
  if (attempt.decision.decision !== "allow" || attempt.run === undefined) {
    return refuse(tool, refusal(attempt), options, call);
  }
  let result: unknown;
  try {
    result = await execute();
  } catch (e) {
    gov.finish(attempt, { status: "error", error: e instanceof Error ? e.message : String(e) });
    throw e;
  }
  const failure = options.failed?.(result);
  const view = options.view === undefined ? result : options.view(result);
  if (failure !== undefined) {
    // A failure the framework returns is shown to the model too: redacted (or withheld) like an output.
    const failed = gov.finish(attempt, { status: "error", error: failure.slice(0, 500), output: view });
    if (failed.action === "pass") return result;
    if (failed.action === "block") {
      return refuse(
        tool,
        new OnbehalfError("ERR_OUTPUT_BLOCKED", `${tool} failed; its message is withheld by policy`),
        options,
        call,
      );
    }
    return options.redacted === undefined ? failed.output : options.redacted(result, failed.output);
  }
  const done = gov.finish(attempt, { status: "ok", output: view });
  if (done.action === "block") {
    const details = { call_id: attempt.callId };
    const blocked = new OnbehalfError("ERR_OUTPUT_BLOCKED", `the output of ${tool} is withheld by policy`, {
      details,
    });
    return refuse(tool, blocked, options, call);
  }
  if (done.output === view) return result;
  return options.redacted === undefined ? done.output : options.redacted(result, done.output);
}

/**
 * Calls decided ahead, in a framework's `needsApproval` hook, for its `execute` to finish: per run (any object
 * that lives as long as it), by tool call id. An `ask` opens its approval right away, so an approver can decide
 * while the framework pauses.
 */
export class DecidedAhead<K extends object> {
  private readonly byRun = new WeakMap<K, Map<string, CallAttempt>>();

  /**
   * Decide a call now; true when the policy asks. `run` undefined or a failure to decide: false (the framework's
   * own answer stands, and `execute` decides again and refuses).
   */
  async decide(
    gov: Governor,
    key: K,
    callId: string | undefined,
    run: RunContext | undefined,
    tool: string,
    args: unknown,
  ): Promise<boolean> {
    let attempt: CallAttempt;
    try {
      attempt = await gov.begin(run, tool, args);
    } catch {
      return false;
    }
    if (callId !== undefined) {
      const calls = this.byRun.get(key) ?? new Map<string, CallAttempt>();
      calls.set(callId, attempt);
      this.byRun.set(key, calls);
    }
    const ask = attempt.decision.decision === "ask" && attempt.run !== undefined;
    if (ask) await gov.approvals.open(attempt, args).catch(() => {});
    return ask;
  }

  /** The attempt decided ahead for this call, once (undefined when there is none). */
  take(key: K | undefined, callId: string | undefined): CallAttempt | undefined {
    if (key === undefined || callId === undefined) return undefined;
    const calls = this.byRun.get(key);
    const attempt = calls?.get(callId);
    if (attempt !== undefined) calls?.delete(callId);
    return attempt;
  }
}

/** What the model reads for a refused call: the tool, the reason and the stable code. */
export function denialText(tool: string, error: OnbehalfError): string {
  return `onbehalf refused ${tool}: ${error.message} (${error.code})`;
}

/** Hand a refusal to the framework: as its tool-error result, or thrown when `onDeny` is `throw`. */
function refuse<C>(tool: string, error: OnbehalfError, options: CallOptions<C>, call: C): unknown {
  if (options.onDeny === "throw") throw error;
  return options.asError(denialText(tool, error), call);
}

/**
 * An `ask` attempt with the approval an approver gave it: taken (used once) and the call decided again, or,
 * without one, the approval opened for a human and the attempt refused with where it waits.
 */
async function approved(
  gov: Governor,
  attempt: CallAttempt,
  run: RunContext,
  tool: string,
  args: unknown,
  extra: { readonly source?: Source },
): Promise<CallAttempt> {
  const taken = await gov.beginApproved(run, tool, args, undefined, extra);
  if ("attempt" in taken) return taken.attempt;
  // A decided approval answers the call it was asked for; a later call with the same arguments asks anew.
  const answered = taken.approval !== null && taken.approval.status !== "pending";
  if (taken.approval === null || (answered && taken.approval.call_id !== attempt.callId)) {
    const waiting = await gov.approvals.open(attempt, args);
    return asking(
      attempt,
      `${attempt.decision.reason}: waiting for a human to approve (approval ${waiting.id})`,
    );
  }
  if (!answered) {
    return asking(
      attempt,
      `${attempt.decision.reason}: waiting for a human to approve (approval ${taken.approval.id})`,
    );
  }
  return {
    ...attempt,
    decision: {
      ...attempt.decision,
      decision: taken.reason_code === "approval_required" ? "ask" : "deny",
      reason_code: taken.reason_code,
      reason: taken.reason,
    },
  };
}

function asking(attempt: CallAttempt, reason: string): CallAttempt {
  return {
    ...attempt,
    decision: { ...attempt.decision, decision: "ask", reason_code: "approval_required", reason },
  };
}

function decidedFor(attempt: CallAttempt, args: unknown): boolean {
  try {
    return digestArgs(args).digest === attempt.fields.args_digest;
  } catch {
    return false;
  }
}

function asRefusal(e: unknown): OnbehalfError {
  if (isOnbehalfError(e)) return e;
  return new OnbehalfError("ERR_POLICY_DENIED", `fail_closed: ${(e as Error).message}`, { cause: e });
}
