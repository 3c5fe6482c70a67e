/**
 * The governor: one object that verifies humans, binds them to agent runs, and governs tool calls. It wires
 * the concerns together (identity, context, policy, limits, audit) and owns their lifetimes; the concerns
 * never import it. Starting one is bootstrap.ts; the configuration it holds, live-config.ts. The per-call path
 * reads top to bottom here and in pipeline.ts.
 */
import { newCallId } from "../audit/call-id.js";
import type { AuditLog } from "../audit/log.js";
import { type AuditFields, type AuditRecord, type Source, timestamp } from "../audit/record.js";
import type { AuditPage, AuditQuery, AuditStore } from "../audit/store.js";
import type { Config } from "../config/schema.js";
import {
  type DelegateOptions,
  delegate,
  type RunContext,
  type RunOptions,
  runAs,
  tryCurrentRun,
} from "../context/run.js";
import type { Decision } from "../decision.js";
import { OnbehalfError } from "../errors.js";
import type { Principal } from "../identity/principal.js";
import type { Identity } from "../identity/verify.js";
import type { RateLimiter } from "../limits/window.js";
import { checkedLayer } from "../policy/capabilities.js";
import type { CompiledPolicy } from "../policy/compile.js";
import {
  type ApprovalGrant,
  type ApprovalRefusal,
  type ApprovalStore,
  Approvals,
  createMemoryApprovalStore,
} from "./approvals.js";
import type { LoadedConfig } from "./config.js";
import { LiveConfig } from "./live-config.js";
import {
  type BeginOptions,
  beginCall,
  type CallAttempt,
  type CallResult,
  type DecisionObserver,
  type FinishedCall,
  finishCall,
  finishReported,
  type PipelineDeps,
  type ReportedCall,
  refusal,
} from "./pipeline.js";
import type { ToolDeclaration } from "./tools.js";

/** What a governor is besides its services (see bootstrap.ts for the rest of its options). */
export interface GovernorSettings {
  /** What audit records say the calls came through. Default `inproc`. */
  source?: Source;
  /** Clock in ms (tests). Default: Date.now. */
  now?: () => number;
  /** Where approvals live. Default: in this process. (The control plane passes its shared store.) */
  approvalStore?: ApprovalStore;
  /** How long an approval waits for a human. Default 15 minutes. */
  approvalTtlMs?: number;
  /**
   * Told of every decision once audited: the call's source, the decision, how long deciding took in seconds
   * (the control plane's latency histogram). Keep it cheap: it runs on every call.
   */
  onDecided?: DecisionObserver;
}

/** What a governed tool's `execute` receives besides its arguments. */
export interface ToolCallContext {
  readonly run: RunContext;
  readonly callId: string;
  readonly decision: Decision;
}

/** A tool as the application defines it; the policy fields add to the config's entry for the same name. */
export interface GovernedToolDefinition<A, R> extends ToolDeclaration {
  readonly execute: (args: A, context: ToolCallContext) => R | Promise<R>;
}

/** A governed tool: call it like the function it wraps. */
export type GovernedTool<A, R> = ((args: A) => Promise<Awaited<R>>) & { readonly toolName: string };

export class Governor {
  private readonly live: LiveConfig;
  private readonly deps: PipelineDeps;
  private readonly source: Source;
  private closed = false;
  /**
   * Approvals of calls the policy answers with `ask`: list them, let an approver decide, and take an approved
   * one for the call it approves. See {@link Approvals}.
   */
  readonly approvals: Approvals;
  private readonly ownApprovalStore: (ApprovalStore & { close(): void }) | undefined;
  /** Governed tools executing now, and who waits for them to finish (close). */
  private inflight = 0;
  private drained: (() => void) | undefined;

  constructor(
    loaded: LoadedConfig,
    private readonly identity: Identity,
    private readonly store: AuditStore,
    private readonly audit: AuditLog,
    private readonly limiter: RateLimiter,
    options: GovernorSettings,
    private readonly warn: (message: string) => void,
  ) {
    this.live = new LiveConfig(loaded, warn);
    this.source = options.source ?? "inproc";
    this.deps = {
      policy: () => this.live.policy,
      audit,
      limiter,
      durability: loaded.config.audit.durability,
      now: options.now ?? Date.now,
      onDecided: options.onDecided,
    };
    this.ownApprovalStore =
      options.approvalStore === undefined ? createMemoryApprovalStore(this.deps.now) : undefined;
    this.approvals = new Approvals({
      store: options.approvalStore ?? this.ownApprovalStore!,
      policy: () => this.live.policy,
      now: this.deps.now,
      record: (fields) => this.recordEvent(fields),
      acknowledged: (seq) => this.audit.acknowledged(seq),
      auditProblem: () => this.audit.problem,
      ttlMs: options.approvalTtlMs ?? 15 * 60_000,
    });
  }

  /** The validated configuration in force. */
  get config(): Config {
    return this.live.config;
  }

  /** The compiled policy in force, tools declared in code included. */
  get policy(): CompiledPolicy {
    return this.live.policy;
  }

  /**
   * Call `listener` after each change of the policy in force (admin API, a change shared by another instance,
   * a reload, a tool declared in code); returns what stops it.
   *
   * @example
   * const stop = gov.onPolicyChange(() => console.log("policy changed"));
   */
  onPolicyChange(listener: () => void): () => void {
    return this.live.onChange(listener);
  }

  /** The audit store (queries, checkpoints, proofs). */
  get auditStore(): AuditStore {
    return this.store;
  }

  /** The audit writer (its log id, health and counters). */
  get auditLog(): AuditLog {
    return this.audit;
  }

  /**
   * Verify a bearer token, given as an `Authorization` header value or as the bare token.
   * Throws `OnbehalfError` with an `ERR_TOKEN_*` code.
   *
   * @example
   * const principal = await gov.verify(req.headers.authorization);
   */
  verify(authorization: string | null | undefined): Promise<Principal> {
    // A header (`Bearer …`) has a space where a bare token has none.
    if (typeof authorization === "string" && !authorization.includes(" ") && isCompactJws(authorization)) {
      return this.identity.verify(authorization);
    }
    return this.identity.verifyAuthorization(authorization);
  }

  /**
   * Run `fn` acting for `principal` through an agent; every governed call inside sees them. With
   * `capabilities`, the run may call only the tools they grant, with arguments their conditions accept, on top
   * of the tenant's policy (docs/capabilities.md); a condition that does not compile throws
   * `ERR_INVALID_ARGUMENT` here, not on every call.
   *
   * @example
   * await gov.runAs(principal, { agent: "support-bot", tier: "interactive" }, () => getCustomer({ id: "c-1" }));
   * await gov.runAs(principal, { agent: "bank-bot", capabilities: { tools: ["get_balance"] } }, () => agent.run());
   */
  runAs<T>(principal: Principal, options: RunOptions, fn: () => T): T {
    if (options.capabilities !== undefined) checkedLayer(options.agent, options.capabilities);
    return runAs(principal, options, fn);
  }

  /**
   * Run `fn` as a sub-agent of the current run: the chain grows, scopes only narrow.
   *
   * @example
   * await gov.delegate("specialist", { scopes: ["email.read"], tier: "subagent" }, () => readEmail(args));
   */
  delegate<T>(agent: string, options: DelegateOptions, fn: () => T): T {
    if (options.capabilities !== undefined) checkedLayer(agent, options.capabilities);
    return delegate(agent, options, fn);
  }

  /**
   * Wrap a tool so every call is decided, rate-limited, executed, post-transformed and audited.
   * A denied call rejects with `ERR_POLICY_DENIED`, `ERR_RATE_LIMITED` or `ERR_APPROVAL_REQUIRED` carrying
   * the decision in `details`; with nothing bound it rejects with `ERR_NO_IDENTITY`.
   *
   * @example
   * const getCustomer = gov.governed({ name: "get_customer", execute: async ({ id }) => db.customer(id) });
   */
  governed<A, R>(definition: GovernedToolDefinition<A, R>): GovernedTool<A, R> {
    this.live.declare(definition);
    const name = definition.name;
    const call = (args: A): Promise<Awaited<R>> => {
      let attempt: CallAttempt | Promise<CallAttempt>;
      try {
        attempt = this.beginGoverned(tryCurrentRun(), name, args);
      } catch (e) {
        return Promise.reject(e);
      }
      return attempt instanceof Promise
        ? attempt.then((a) => this.runTool(definition, a, args))
        : this.runTool(definition, attempt, args);
    };
    return Object.assign(call, { toolName: name });
  }

  /** Enforce the decision, run the tool, post-transform and audit its outcome. */
  private async runTool<A, R>(
    definition: GovernedToolDefinition<A, R>,
    attempt: CallAttempt,
    args: A,
  ): Promise<Awaited<R>> {
    const run = attempt.run;
    if (attempt.decision.decision !== "allow" || run === undefined) throw refusal(attempt);
    let output: Awaited<R>;
    this.inflight++;
    try {
      output = await definition.execute(args, { run, callId: attempt.callId, decision: attempt.decision });
    } catch (e) {
      this.finish(attempt, { status: "error", error: e instanceof Error ? e.message : String(e) });
      throw e;
    } finally {
      if (--this.inflight === 0) this.drained?.();
    }
    const done = this.finish(attempt, { status: "ok", output });
    if (done.action === "block") {
      throw new OnbehalfError(
        "ERR_OUTPUT_BLOCKED",
        `the output of ${definition.name} is withheld by policy`,
        {
          details: { call_id: attempt.callId },
        },
      );
    }
    return done.output as Awaited<R>;
  }

  private beginGoverned(
    run: RunContext | undefined,
    tool: string,
    args: unknown,
  ): CallAttempt | Promise<CallAttempt> {
    if (this.closed) throw new OnbehalfError("ERR_CLOSED", "the governor is closed");
    return beginCall(this.deps, run, { tool, args, source: this.source });
  }

  /**
   * Decide and audit one call without running anything (adapters and the server use this); run the tool
   * only when `attempt.decision.decision` is `allow`, then report with {@link Governor.finish}.
   */
  begin(
    run: RunContext | undefined,
    tool: string,
    args: unknown,
    extra: Partial<Omit<BeginOptions, "tool" | "args">> = {},
  ): Promise<CallAttempt> {
    if (this.closed) return Promise.reject(new OnbehalfError("ERR_CLOSED", "the governor is closed"));
    try {
      return Promise.resolve(
        beginCall(this.deps, run, { ...extra, tool, args, source: extra.source ?? this.source }),
      );
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * Decide a call again with its approval (`approvalId`, else the newest approval opened for this very call):
   * the approval is taken (used once, bound to this user, tool and arguments) and the call decided under the
   * policy in force, which still wins over it; a denial now revokes the approval (an outage gives it back). When
   * no approval can be taken, the refusal says why (still pending, denied, expired, used, for another call) and
   * nothing is decided.
   */
  async beginApproved(
    run: RunContext,
    tool: string,
    args: unknown,
    approvalId: string | undefined,
    extra: Partial<Omit<BeginOptions, "tool" | "args" | "approved" | "unapproved">> = {},
  ): Promise<{ readonly attempt: CallAttempt; readonly grant: ApprovalGrant } | ApprovalRefusal> {
    let taken: ApprovalGrant | ApprovalRefusal;
    try {
      taken = await this.approvals.take(run, tool, args, approvalId);
    } catch (e) {
      // The approvals' store cannot answer: the call is decided as one whose approval cannot be taken. A
      // policy that still asks makes it a fail_closed denial, never an outage a fail-open client runs it on.
      const reason = `its approval cannot be taken: ${(e as Error).message}`;
      taken = { reason_code: "fail_closed", reason, approval: null };
    }
    if (!("begin" in taken)) return taken;
    const attempt = await this.begin(run, tool, args, { ...extra, ...taken.begin });
    if (attempt.decision.decision === "deny") {
      // Given back (a store failed the call) or revoked (the policy denies it now). If the approvals' store cannot
      // take that, the approval stays used; the denial stands either way (an error would be an outage answer).
      await this.approvals.notRun(taken, attempt.decision).catch((e: unknown) => {
        this.warn(`approval ${taken.approval.id} stays used: ${(e as Error).message}`);
      });
    }
    return { attempt, grant: taken };
  }

  /** Post-transform and audit what an allowed call returned. */
  finish(attempt: CallAttempt, result: CallResult): FinishedCall {
    return finishCall(this.deps, attempt, result);
  }

  /** Post-transform and audit the result of a call decided earlier and reported now (the server's path). */
  finishReported(call: ReportedCall, result: CallResult): FinishedCall {
    return finishReported(this.deps, call, result);
  }

  /**
   * Append an audit record that is not a tool call: an approval, a token exchange, an admin change.
   * Returns its sequence number.
   */
  recordEvent(
    fields: Omit<AuditFields, "time" | "source" | "latency_us" | "shadow"> & {
      latency_us?: number;
      source?: Source;
    },
  ): number {
    return this.audit.append({
      latency_us: 0,
      source: this.source,
      ...fields,
      time: timestamp(this.deps.now()),
      shadow: null,
    });
  }

  /**
   * Append an `admin` record: something that happened to the system, by no human (a change of policy, a resumed
   * log, a tool an upstream offered). Returns its sequence number.
   *
   * @example
   * gov.recordAdmin("tenant acme replaced", { id: "acme" });
   */
  recordAdmin(
    reason: string,
    args: unknown,
    more: Partial<Pick<AuditFields, "tool" | "decision" | "reason_code" | "outcome">> = {},
  ): number {
    return this.recordEvent({
      kind: "admin",
      tenant: null,
      user: null,
      email: null,
      agent: null,
      tier: null,
      chain: [],
      tool: null,
      args_digest: null,
      args,
      decision: "allow",
      reason_code: "ok",
      reason,
      rule: null,
      outcome: "none",
      trace_id: null,
      call_id: newCallId(this.deps.now()),
      ...more,
    });
  }

  /** The clock the governor decides with (ms). */
  now(): number {
    return this.deps.now();
  }

  /** The tenants and tools in force, as JSON, for sharing admin changes between instances. */
  dynamicConfig(): string {
    return this.live.snapshot();
  }

  /** Apply tenants and tools shared by another instance (validated like the file). */
  applyDynamicConfig(snapshot: string): void {
    this.live.applySnapshot(snapshot);
  }

  /**
   * Query the audit log. Every record this governor queued before the query is written first (read your
   * writes); other writers' records appear as soon as they commit.
   */
  async queryAudit(q: AuditQuery): Promise<AuditPage> {
    await this.audit.flush();
    return this.store.query(q);
  }

  /** Wait until every audit record so far has committed. */
  flush(): Promise<void> {
    return this.audit.flush();
  }

  /** Flush the audit and release everything. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      // Calls already running may finish (up to 10 s) so their outcome records are written too.
      if (this.inflight > 0) {
        await new Promise<void>((resolve) => {
          this.drained = resolve;
          setTimeout(resolve, 10_000).unref();
        });
      }
      await this.audit.close();
    } finally {
      this.ownApprovalStore?.close();
      await this.limiter.close();
      this.identity.close();
      await this.store.close();
    }
  }

  /**
   * Replace a tenant (membership directory and policy), live on the next call. Validated like the config
   * file; on any error the tenant in force stays as it was.
   *
   * @example
   * gov.replaceTenant({ id: "acme", require_membership: true, users: [{ uid: "alice" }] });
   */
  replaceTenant(tenant: unknown): void {
    this.live.replaceTenant(tenant);
  }

  /** Apply a JSON merge patch (RFC 7396) to a tenant's policy, live on the next call. */
  patchTenantPolicy(id: string, patch: unknown): void {
    this.live.patchTenantPolicy(id, patch);
  }

  /** Remove a tenant: its users' calls are denied from the next call on. Returns whether it existed. */
  deleteTenant(id: string): boolean {
    return this.live.deleteTenant(id);
  }

  /** Add or replace a tool declaration, live on the next call. */
  putTool(tool: unknown): void {
    this.live.putTool(tool);
  }

  /**
   * Declare a tool that something else executes (an upstream MCP server, a remote agent), so policy can
   * decide its calls. Merged with the config's entry like `governed()` tools.
   */
  declare(definition: ToolDeclaration): void {
    this.live.declare(definition);
  }
}

export type { AuditRecord };

/** Whether `text` has the two dots of a compact JWS (without splitting it). */
function isCompactJws(text: string): boolean {
  const first = text.indexOf(".");
  const second = first === -1 ? -1 : text.indexOf(".", first + 1);
  return second !== -1 && text.indexOf(".", second + 1) === -1;
}
