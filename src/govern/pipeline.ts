/**
 * The pipeline of one governed call, shared by in-process tools, adapters and the server:
 *
 *   begin:  audit writer behind? wait → identity bound? → decide (policy) → audit healthy? → rate limit
 *           → audit the attempt
 *   (the caller runs the tool when the decision is allow)
 *   finish: post-transform the output (pass / redact / block) → audit the outcome
 *
 * Anything unexpected on the way is a deny with a reason code; nothing here allows on an error.
 * `beginCall` stays synchronous unless the rate-limit store or `durability: sync` needs to wait: on Node 20
 * every promise passes through AsyncLocalStorage's hooks, so the hot path creates as few as it can.
 */

import type { Span } from "@opentelemetry/api";
import { newCallId } from "../audit/call-id.js";
import { canonicalJson } from "../audit/canonical.js";
import type { AuditLog } from "../audit/log.js";
import {
  type AuditFields,
  digestArgs,
  digestCapabilities,
  type Outcome,
  type Source,
  timestamp,
} from "../audit/record.js";
import type { CapabilityLayer } from "../config/capabilities.js";
import type { PostTransform } from "../config/policy.js";
import type { RunContext } from "../context/run.js";
import { type Bucket, type Decision, denial, type ReasonCode } from "../decision.js";
import { OnbehalfError } from "../errors.js";
import type { RateLimiter } from "../limits/window.js";
import type { CompiledPolicy, CompiledTool } from "../policy/compile.js";
import { type DecisionInput, decide } from "../policy/decide.js";
import { type OutputRedaction, redactOutput } from "../policy/output.js";
import { compilePath, type RedactPath, redact } from "../policy/redact.js";
import { endDecisionSpan, startDecisionSpan } from "./spans.js";

/** A call that has been decided and audited; `finish` it after running the tool. */
export interface CallAttempt {
  readonly callId: string;
  readonly decision: Decision;
  /** The attempt's audit fields (the outcome record repeats them). */
  readonly fields: AuditFields;
  /** The attempt record's sequence number in this instance's log; NOT_RECORDED for a denial it could not take. */
  readonly seq: number;
  readonly run: RunContext | undefined;
  readonly tool: CompiledTool | undefined;
  /** `process.hrtime.bigint()` when the call began. */
  readonly startedAt: bigint;
}

/** What the tool did. */
/**
 * What the tool did. A failure may come with what the model is shown of it (`output`: an MCP error result, say),
 * which is redacted like any output; its `error` text is audited only where no redaction applies.
 */
export type CallResult =
  | { status: "ok"; output: unknown }
  | { status: "error"; error: string; output?: unknown };

/** What to hand back to the model. */
export interface FinishedCall {
  readonly action: "pass" | "redact" | "block";
  readonly output: unknown;
  /** The outcome record's sequence number. */
  readonly seq: number;
}

export interface PipelineDeps {
  /** The current policy; read on every call so a replaced policy applies on the next call. */
  policy(): CompiledPolicy;
  readonly audit: AuditLog;
  readonly limiter: RateLimiter;
  readonly durability: "batch" | "sync";
  readonly now: () => number;
  /** Told of every decision once audited, with how long deciding took (metrics). */
  readonly onDecided?: DecisionObserver | undefined;
}

/** Told of each decision: where the call came from, what was decided, and how long it took in seconds. */
export type DecisionObserver = (source: Source, decision: Decision["decision"], seconds: number) => void;

export interface BeginOptions {
  readonly tool: string;
  readonly args: unknown;
  readonly source: Source;
  readonly traceId?: string | undefined;
  readonly callId?: string | undefined;
  /** With no run: why there is no identity (a rejected token, say), for the audit. */
  readonly unauthenticated?: string | undefined;
  /**
   * The call was approved by a human (an approval taken with `gov.approvals.take`): a decision `ask` becomes
   * `allow`. Any other decision stands: the policy in force still wins over the approval.
   */
  readonly approved?: { readonly id: string; readonly by: string } | undefined;
  /**
   * The call came with an approval that cannot let it through: `ask` stands (with this reason) when the code is
   * `approval_required` (still pending, for another call, used already), else it becomes this deny.
   */
  readonly unapproved?: { readonly reason_code: ReasonCode; readonly reason: string } | undefined;
  /**
   * The client refused the call on its own (an agent whose hand-off was refused, say) and reports it to be
   * audited: it is denied with this code whatever the policy says. Never an allow.
   */
  readonly refused?: { readonly reason_code: ReasonCode; readonly reason: string } | undefined;
  /**
   * The caller will not report the call's result (`"report": false` at /v1/check): an allowed or asked call's
   * attempt record says `outcome: unreported` instead of `pending`, and no outcome record follows.
   */
  readonly unreported?: boolean | undefined;
}

/** Decided, not yet rate-limited or audited. */
interface Deciding {
  readonly deps: PipelineDeps;
  readonly run: RunContext | undefined;
  readonly opts: BeginOptions;
  readonly policy: CompiledPolicy;
  readonly tool: CompiledTool | undefined;
  readonly digest: string;
  readonly bytes: number;
  /** The canonical JSON of the arguments as they were when decided. */
  readonly canonical: string;
  readonly now: number;
  readonly startedAt: bigint;
  /** The decision's OpenTelemetry span (a no-op one unless the application installed an SDK). */
  readonly span: Span;
}

/**
 * Decide and audit one attempt. Never throws for a policy outcome: the decision says what happened.
 * Throws only when the attempt could not be audited (`ERR_AUDIT_UNAVAILABLE`), which callers treat as deny.
 * Returns synchronously when nothing needs to wait.
 */
export function beginCall(
  deps: PipelineDeps,
  run: RunContext | undefined,
  opts: BeginOptions,
): CallAttempt | Promise<CallAttempt> {
  // Back-pressure: a writer far behind (a tight loop of calls that never yields) is given its turns first.
  if (deps.audit.congested) return deps.audit.drained().then(() => beginCall(deps, run, opts));
  const startedAt = process.hrtime.bigint();
  const span = startDecisionSpan(opts.traceId ?? run?.traceId);
  const now = deps.now();
  const policy = deps.policy();
  // Arguments that cannot be encoded (a cycle, a BigInt) cannot be decided on or audited: deny, and audit a note.
  let unencodable: string | undefined;
  let encoded: { digest: string; bytes: number; canonical: string } | undefined;
  try {
    encoded = digestArgs(opts.args);
    // CEL reads an object with a `$typeName` key as a protobuf message (a string wrapper, say): a rule would
    // see something else than the tool gets. No tool argument needs that key: refuse it.
    if (encoded.canonical.includes('"$typeName"') && hasKey(opts.args, "$typeName")) {
      unencodable =
        'the arguments use the reserved key "$typeName": policy rules would read that object as another type';
    }
  } catch (e) {
    unencodable = `the arguments cannot be encoded as JSON: ${(e as Error).message}`;
  }
  if (unencodable !== undefined || encoded === undefined) {
    opts = { ...opts, args: { unencodable } };
    encoded = digestArgs(opts.args);
  }
  const { digest, bytes, canonical } = encoded;
  const deciding: Deciding = {
    deps,
    run,
    opts,
    policy,
    tool: policy.tools.get(opts.tool),
    digest,
    bytes,
    canonical,
    now,
    startedAt,
    span,
  };
  if (run === undefined) {
    return recordAttempt(
      deciding,
      denial("unauthenticated", opts.unauthenticated ?? "no identity is bound to this call"),
    );
  }
  if (unencodable !== undefined) return recordAttempt(deciding, denial("error", unencodable));
  let decision: Decision;
  try {
    decision = decide(policy, callInput(run, opts.tool, opts.args, bytes, now));
  } catch (e) {
    decision = denial("error", `policy evaluation failed: ${(e as Error).message}`);
  }
  if (opts.refused !== undefined) {
    const { reason_code, reason } = opts.refused;
    decision = { ...denyWith(decision, reason_code, `refused by the client: ${reason}`), layer: null };
  } else if (decision.decision === "ask" && opts.approved !== undefined) {
    const { id, by } = opts.approved;
    decision = {
      ...decision,
      decision: "allow",
      reason_code: "ok",
      reason: `approved by ${by} (${id}): ${decision.reason}`,
      buckets: [], // charged when it asked
    };
  } else if (decision.decision === "ask" && opts.unapproved !== undefined) {
    // Still waiting, or an approval for another call or used already: it still asks. Denied or expired: deny.
    const { reason_code, reason } = opts.unapproved;
    decision =
      reason_code === "approval_required"
        ? { ...decision, reason: `${reason}; ${decision.reason}` }
        : reason_code === "fail_closed"
          ? storeDown(decision, reason)
          : denyWith(decision, reason_code, reason);
  }
  if (!deps.audit.healthy)
    return recordAttempt(deciding, storeDown(decision, "the audit store is unavailable"));
  if (decision.buckets.length === 0) return recordAttempt(deciding, decision);
  let taken: Bucket | null | Promise<Bucket | null>;
  try {
    taken = deps.limiter.take(decision.buckets, now);
  } catch (e) {
    return recordAttempt(deciding, limiterDown(decision, e));
  }
  if (taken instanceof Promise) {
    return taken.then(
      (full) => recordAttempt(deciding, afterLimit(decision, full)),
      (e: unknown) => recordAttempt(deciding, limiterDown(decision, e)),
    );
  }
  return recordAttempt(deciding, afterLimit(decision, taken));
}

/** What `decide` reads of a call made in `run`: the human, the chain and its tiers, the tool and arguments. */
export function callInput(
  run: RunContext,
  tool: string,
  args: unknown,
  argsBytes: number,
  now: number,
): DecisionInput {
  return {
    principal: run.principal,
    tenant: run.tenant,
    agent: run.agent,
    tier: run.tier,
    tiers: run.tiers,
    chain: run.chain,
    scopes: run.scopes,
    tool,
    args,
    argsBytes,
    now,
    capabilities: run.capabilities,
  };
}

const digests = new WeakMap<readonly CapabilityLayer[], string>();

/**
 * The digest of a run's capabilities as the audit records it; undefined for a run without any.
 *
 * @example
 * capabilityDigestOf(run); // "sha256:…" or undefined
 */
export function capabilityDigestOf(run: RunContext | undefined): string | undefined {
  const layers = run?.capabilities;
  if (layers === undefined || layers.length === 0) return undefined;
  let digest = digests.get(layers);
  if (digest === undefined) {
    digest = digestCapabilities(layers);
    digests.set(layers, digest);
  }
  return digest;
}

/** Apply the post-transform to what the tool returned and audit the outcome. */
export function finishCall(deps: PipelineDeps, attempt: CallAttempt, result: CallResult): FinishedCall {
  return finishReported(
    deps,
    {
      fields: attempt.fields,
      tool: attempt.tool,
      postTransform: attempt.decision.post_transform,
      redact: attempt.decision.redact,
      latencyUs: elapsedMicros(attempt.startedAt),
    },
    result,
  );
}

/**
 * What policy does to a call's output, for what reaches the model beside the result (an MCP upstream's log
 * messages and requests while the call runs): `null` when nothing is redacted, `"block"` when the output is
 * blocked, else the redaction to apply.
 *
 * @example
 * const screen = outputPolicyOf(attempt); // { tool: "crm.get_customer", paths: [...], unparsed: "withhold" }
 */
export function outputPolicyOf(attempt: CallAttempt): OutputRedaction | "block" | null {
  const d = attempt.decision;
  if (d.post_transform === "block") return "block";
  const paths = d.post_transform === "redact" ? redactionPaths(attempt.tool, d.redact) : NO_PATHS;
  return paths.length === 0 ? null : redactionOf({ fields: attempt.fields, tool: attempt.tool }, paths);
}

/** What finishing a call needs to know about its attempt (in-process, or reported later to the server). */
export interface ReportedCall {
  readonly fields: AuditFields;
  readonly tool: CompiledTool | undefined;
  readonly postTransform: PostTransform;
  /** Redaction paths added by rules. */
  readonly redact: readonly string[];
  readonly latencyUs: number;
}

/** Post-transform a result and append the outcome record. */
export function finishReported(deps: PipelineDeps, call: ReportedCall, result: CallResult): FinishedCall {
  let action: FinishedCall["action"] = "pass";
  let output: unknown;
  let outcome: Outcome;
  let reason: string;
  const paths = call.postTransform === "redact" ? redactionPaths(call.tool, call.redact) : NO_PATHS;
  if (result.status === "error") {
    outcome = "error";
    // An error message can carry what the output would have: where policy redacts or blocks the output, it is
    // not kept, and what the model is shown of the failure is redacted (or withheld) like an output.
    const hidden = paths.length > 0 || call.postTransform === "block";
    reason = hidden
      ? "tool failed (its message is not kept: policy redacts or blocks this tool's output)"
      : `tool failed: ${result.error}`;
    if (result.output !== undefined && call.postTransform === "block") {
      action = "block";
    } else if (result.output !== undefined) {
      output = paths.length === 0 ? result.output : redactOutput(result.output, redactionOf(call, paths));
      action = output === result.output ? "pass" : "redact";
    }
  } else if (call.postTransform === "block") {
    action = "block";
    outcome = "blocked";
    reason = "output blocked by policy";
  } else {
    // Redaction fails closed: what the paths cannot reach (text that is not JSON, binary data) is withheld.
    let withheld: string[] | undefined;
    if (paths.length === 0) {
      output = result.output;
    } else {
      withheld = [];
      output = redactOutput(result.output, { ...redactionOf(call, paths), withheld });
    }
    action = output === result.output ? "pass" : "redact";
    outcome = "ok";
    reason = action === "pass" ? "ok" : redactionReason(withheld);
  }
  const f = call.fields;
  const seq = deps.audit.append({
    kind: "outcome",
    time: timestamp(deps.now()),
    tenant: f.tenant,
    user: f.user,
    email: f.email,
    agent: f.agent,
    tier: f.tier,
    chain: f.chain,
    tool: f.tool,
    args_digest: f.args_digest,
    args: f.args,
    ...(f.argsCanonical === undefined ? {} : { argsCanonical: f.argsCanonical }),
    decision: f.decision,
    reason_code: f.reason_code,
    reason,
    rule: f.rule,
    outcome,
    trace_id: f.trace_id,
    call_id: f.call_id,
    latency_us: call.latencyUs,
    source: f.source,
    shadow: f.shadow,
    ...(f.capabilities === undefined ? {} : { capabilities: f.capabilities }),
    ...(f.chain_clients === undefined ? {} : { chain_clients: f.chain_clients }),
  });
  return { action, output, seq };
}

/** The error the enforcement edge throws for a decision that is not allow. */
export function refusal(attempt: CallAttempt): OnbehalfError {
  const d = attempt.decision;
  const details = { ...publicDecision(d), call_id: attempt.callId };
  if (d.reason_code === "unauthenticated") {
    return new OnbehalfError("ERR_NO_IDENTITY", `${d.reason}: wrap the agent run in gov.runAs()`, {
      details,
    });
  }
  if (d.reason_code === "rate_limited") return new OnbehalfError("ERR_RATE_LIMITED", d.reason, { details });
  if (d.decision === "ask") return new OnbehalfError("ERR_APPROVAL_REQUIRED", d.reason, { details });
  return new OnbehalfError("ERR_POLICY_DENIED", `${d.reason_code}: ${d.reason}`, {
    details,
    ...(d.reason_code === "missing_scope" ? { oauth: "insufficient_scope" as const } : {}),
  });
}

/** The decision as clients see it (no internal bucket keys). */
export function publicDecision(d: Decision): Omit<Decision, "buckets"> {
  const { buckets: _buckets, ...rest } = d;
  return rest;
}

function recordAttempt(p: Deciding, decision: Decision): CallAttempt | Promise<CallAttempt> {
  const { run, opts, now } = p;
  const callId = opts.callId ?? newCallId(now);
  // Without an identity, nobody answers for the arguments: only their digest and size are kept, so anyone on
  // the network cannot fill the log with what they send. Nor does a tenant answer for a caller it does not take
  // (another issuer's user, another tenant's): its record names the attempt, not its content or run.
  const unanswered =
    run === undefined
      ? "from a call with no identity"
      : decision.reason_code === "tenant_mismatch"
        ? `from a caller tenant ${decision.tenant ?? run.principal.tenant ?? "(none)"} does not take`
        : null;
  const audited =
    unanswered !== null
      ? { omitted: `${p.bytes} bytes, ${unanswered}` }
      : auditedArgs(opts.args, p.tool, p.bytes, p.policy.maxArgsBytes);
  const fields: AuditFields = {
    kind: "attempt",
    time: timestamp(now),
    tenant: decision.tenant ?? run?.principal.tenant ?? null,
    user: run?.principal.user ?? null,
    email: run?.principal.email ?? null,
    agent: run?.agent ?? null,
    tier: run?.tier ?? null,
    chain: run?.chain ?? [],
    tool: opts.tool,
    args_digest: p.digest,
    args: audited,
    // Fixed now: what the tool does to its arguments object later cannot change the record.
    argsCanonical: audited === opts.args ? p.canonical : canonicalJson(audited),
    decision: decision.decision,
    reason_code: decision.reason_code,
    reason: decision.reason,
    rule: decision.rule,
    outcome: decision.decision === "deny" ? "none" : opts.unreported === true ? "unreported" : "pending",
    trace_id: unanswered !== null && run !== undefined ? null : (opts.traceId ?? run?.traceId ?? null),
    call_id: callId,
    latency_us: elapsedMicros(p.startedAt),
    source: opts.source,
    shadow: decision.shadow,
    ...capabilityField(run),
    ...(run?.clients === undefined ? {} : { chain_clients: run.clients }),
  };
  endDecisionSpan(p.span, fields, p.tool !== undefined);
  p.deps.onDecided?.(opts.source, decision.decision, fields.latency_us / 1e6);
  const attempt = (seq: number): CallAttempt => ({
    callId,
    decision,
    fields,
    seq,
    run,
    tool: p.tool,
    startedAt: p.startedAt,
  });
  if (p.deps.durability === "sync" && decision.decision === "allow") {
    return p.deps.audit.appendDurable(fields).then(attempt);
  }
  try {
    return attempt(p.deps.audit.append(fields));
  } catch (e) {
    // The queue is full (its store away for long) or the log closed: an allowed call fails closed as before
    // (the error). A denial, or a call the policy asks about, is still answered as a denial, its record counted
    // dropped: answered as an outage, it would send a fail-open client off to run it.
    if (decision.decision === "allow") throw e;
    const unrecorded = attempt(NOT_RECORDED);
    return decision.decision === "deny"
      ? unrecorded
      : { ...unrecorded, decision: storeDown(decision, (e as Error).message) };
  }
}

/** The sequence number of an attempt the audit log could not take (its queue full): nothing to wait for. */
export const NOT_RECORDED = 0;

function capabilityField(run: RunContext | undefined): { capabilities?: string } {
  const digest = capabilityDigestOf(run);
  return digest === undefined ? {} : { capabilities: digest };
}

function afterLimit(decision: Decision, full: Bucket | null): Decision {
  if (full === null) return decision;
  const reason = `rate limit of ${full.limit} calls a minute reached (${full.source})`;
  if (decision.mode === "shadow") {
    return {
      ...decision,
      shadow: decision.shadow ?? { decision: "deny", reason_code: "rate_limited", reason, rule: null },
    };
  }
  return denyWith(decision, "rate_limited", reason);
}

function limiterDown(decision: Decision, e: unknown): Decision {
  return storeDown(decision, `the rate-limit store is unavailable: ${(e as Error).message}`);
}

/**
 * A store the decision needs cannot answer: fail closed, saying what the policy had decided. A policy's denial
 * stands as it is (its record is queued for when the store is back): answered as an outage, it would send a
 * fail-open client off to run a call the policy denied.
 */
function storeDown(decision: Decision, reason: string): Decision {
  if (decision.decision === "deny") return decision;
  return { ...denyWith(decision, "fail_closed", reason), policy_verdict: decision.decision };
}

function denyWith(decision: Decision, reason_code: ReasonCode, reason: string): Decision {
  return {
    ...decision,
    decision: "deny",
    reason_code,
    reason,
    rule: null,
    post_transform: "audit",
    buckets: [],
  };
}

function redactionOf(
  call: Pick<ReportedCall, "fields" | "tool">,
  paths: readonly RedactPath[],
): OutputRedaction {
  return {
    tool: call.fields.tool ?? call.tool?.name ?? "the tool",
    paths,
    unparsed: call.tool?.unparsedOutput ?? "withhold",
  };
}

/** True when `key` is a key of `value` or of anything inside it. */
function hasKey(value: unknown, key: string): boolean {
  if (value === null || typeof value !== "object") return false;
  if (Array.isArray(value)) return value.some((v) => hasKey(v, key));
  return Object.hasOwn(value, key) || Object.values(value).some((v) => hasKey(v, key));
}

/** The arguments as the audit keeps them: their size alone over the limit, else redacted by the tool's paths. */
export function auditedArgs(
  args: unknown,
  tool: CompiledTool | undefined,
  bytes: number,
  max: number,
): unknown {
  if (bytes > max) return { omitted: `${bytes} bytes, over the limit of ${max}` };
  return tool === undefined || tool.redactPaths.length === 0 ? args : redact(args, tool.redactPaths);
}

const NO_PATHS: readonly RedactPath[] = [];
const rulePaths = new Map<string, RedactPath>();

function redactionPaths(tool: CompiledTool | undefined, extra: readonly string[]): readonly RedactPath[] {
  const own = tool?.redactPaths ?? NO_PATHS;
  if (extra.length === 0) return own;
  const out = [...own];
  for (const p of extra) {
    let compiled = rulePaths.get(p);
    if (compiled === undefined) {
      const c = compilePath(p);
      if ("error" in c) continue; // rule paths were validated at load
      compiled = c;
      rulePaths.set(p, compiled);
    }
    out.push(compiled);
  }
  return out;
}

/** The outcome's reason for a redacted output: what was withheld whole, if anything. */
function redactionReason(withheld: readonly string[] | undefined): string {
  if (withheld === undefined || withheld.length === 0) return "output redacted";
  return `output redacted; withheld, as redaction cannot check it: ${[...new Set(withheld)].join(", ")}`;
}

function elapsedMicros(since: bigint): number {
  return Number((process.hrtime.bigint() - since) / 1000n);
}
