/**
 * The governor: one object that verifies humans, binds them to agent runs, and governs tool calls. It wires
 * the concerns together (identity, context, policy, limits, audit) and owns their lifetimes; the concerns
 * never import it.
 */
import { hostname } from "node:os";
import { resolve } from "node:path";
import { newCallId } from "../audit/call-id.js";
import { journalDir } from "../audit/journal.js";
import { type AuditLog, openAuditLog } from "../audit/log.js";
import { type AuditFields, type AuditRecord, type Source, timestamp } from "../audit/record.js";
import type { AuditPage, AuditQuery, AuditStore } from "../audit/store.js";
import type { IssuerConfig } from "../config/issuer.js";
import { formatIssue } from "../config/issues.js";
import { ToolConfig } from "../config/policy.js";
import type { Config, ConfigInput } from "../config/schema.js";
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
import { devIssuerConfig } from "../identity/dev-issuer.js";
import { loadOrCreateSigningKey } from "../identity/keys.js";
import type { Principal } from "../identity/principal.js";
import { createIdentity, type Identity } from "../identity/verify.js";
import { createMemoryLimiter } from "../limits/memory.js";
import type { RateLimiter } from "../limits/window.js";
import { type CompiledPolicy, type CompiledTool, type CompileIssue, compileTool } from "../policy/compile.js";
import { redactUrl, waitFor } from "../retry.js";
import { type ApprovalStore, Approvals, createMemoryApprovalStore } from "./approvals.js";
import { type LoadedConfig, loadConfigFile, loadConfigObject } from "./config.js";
import { lintTool } from "./lint.js";
import {
  type BeginOptions,
  beginCall,
  type CallAttempt,
  type CallResult,
  type FinishedCall,
  finishCall,
  finishReported,
  type PipelineDeps,
  type ReportedCall,
  refusal,
} from "./pipeline.js";

/** Options of {@link createGovernor}. */
export interface GovernorOptions {
  /** A path to `onbehalf.yaml` / JSON, or the config as an object. */
  config: string | ConfigInput;
  /** Environment for `${VAR}` substitution. Default: process.env. */
  env?: NodeJS.ProcessEnv;
  /** Use this audit store instead of the one the config names. */
  auditStore?: AuditStore;
  /** Use this rate limiter instead of the one the config names. */
  limiter?: RateLimiter;
  /** What audit records say the calls came through. Default `inproc`. */
  source?: Source;
  /** Where warnings go (the narrow-tool lint, the dev issuer). Default: console.warn. */
  warn?: (message: string) => void;
  /** Clock in ms (tests). Default: Date.now. */
  now?: () => number;
  /** fetch for OIDC discovery and JWKS (tests). Default: global fetch. */
  fetch?: typeof fetch;
  /**
   * On SIGTERM or SIGINT, close the governor (flushing the audit and signing a final checkpoint) and exit.
   * For processes the governor owns, like `onbehalf serve`. Default false.
   */
  closeOnSignals?: boolean;
  /**
   * onbehalf's own delegation-token issuers to trust beyond the config's (the control plane adds its own; an
   * app verifying the control plane's delegation tokens in-process adds that one). Their tokens carry the
   * issuer that verified the human first, by which tenants are bound to their issuers.
   */
  extraIssuers?: readonly IssuerConfig[];
  /** What this process is, shown to a second writer that finds this one holding the audit log. */
  label?: string;
  /** Where approvals live. Default: in this process. (The control plane passes its shared store.) */
  approvalStore?: ApprovalStore;
  /** How long an approval waits for a human. Default 15 minutes. */
  approvalTtlMs?: number;
  /** How long to wait for the audit store and Redis to answer at start (ms). Default 10 s. */
  startupTimeoutMs?: number;
}

/** What a governed tool's `execute` receives besides its arguments. */
export interface ToolCallContext {
  readonly run: RunContext;
  readonly callId: string;
  readonly decision: Decision;
}

/** A tool as the application defines it; the policy fields add to the config's entry for the same name. */
export interface GovernedToolDefinition<A, R> {
  readonly name: string;
  readonly description?: string;
  readonly required_scopes?: readonly string[];
  readonly sensitivity?: ToolConfig["sensitivity"];
  readonly redact?: readonly string[];
  /** JSON Schema of the arguments (read by the narrow-tool lint). */
  readonly input_schema?: Readonly<Record<string, unknown>>;
  readonly execute: (args: A, context: ToolCallContext) => R | Promise<R>;
}

/** A governed tool: call it like the function it wraps. */
export type GovernedTool<A, R> = ((args: A) => Promise<Awaited<R>>) & { readonly toolName: string };

/**
 * Create a governor from a config file or object.
 *
 * @example
 * const gov = await createGovernor({ config: "onbehalf.yaml" });
 * const principal = await gov.verify(req.headers.authorization);
 */
export async function createGovernor(options: GovernorOptions): Promise<Governor> {
  const env = options.env ?? process.env;
  const loaded =
    typeof options.config === "string"
      ? loadConfigFile(options.config, env)
      : loadConfigObject(options.config);
  const warn = options.warn ?? ((m: string) => console.warn(`onbehalf: ${m}`));
  for (const w of loaded.warnings) warn(formatIssue(w));

  const identity = createIdentity({
    issuers: [...trustedIssuers(loaded), ...(options.extraIssuers ?? [])],
    // The extra issuers are onbehalf's own delegation tokens: they carry the human's first issuer.
    carriers: (options.extraIssuers ?? []).map((i) => i.issuer),
    ...(options.fetch ? { fetch: options.fetch } : {}),
    ...(options.now ? { now: options.now } : {}),
  });
  const store = options.auditStore ?? (await openAuditStore(loaded));
  const auditConfig = loaded.config.audit;
  const startup = { timeoutMs: options.startupTimeoutMs ?? 10_000 };
  // A database still starting (or being set up by a peer) is waited for, within bounds, with one clear error.
  await waitFor(`the audit store (${describeStore(auditConfig.store)})`, () => store.init(), {
    ...startup,
    code: "ERR_AUDIT_UNAVAILABLE",
    onRetry: once(() => warn(`waiting for the audit store (${describeStore(auditConfig.store)})…`)),
  }).catch(async (e: unknown) => {
    if (options.auditStore === undefined) await store.close().catch(() => {});
    throw e;
  });
  let audit: AuditLog;
  try {
    audit = await openAuditLog(store, {
      logId: auditLogId(loaded),
      // Without a configured log id, each process on a host takes a log of its own (see auditLogId).
      slots: auditConfig.log_id === undefined,
      label: options.label ?? "an onbehalf governor",
      batchSize: auditConfig.batch_size,
      flushMs: auditConfig.flush_ms,
      onError: (e) => warn(`audit write failed: ${(e as Error).message}`),
      checkpoints: {
        key: loadOrCreateSigningKey(auditKeyPath(loaded)).privateKey,
        name: auditLogId(loaded),
        every: auditConfig.checkpoint_every,
        seconds: auditConfig.checkpoint_seconds,
      },
      acceptUnsignedTail: auditConfig.resume_unsigned_tail,
      journal: auditJournalDir(loaded),
    });
  } catch (e) {
    if (options.auditStore === undefined) await store.close().catch(() => {});
    throw e;
  }
  let limiter: RateLimiter;
  try {
    limiter = options.limiter ?? (await openLimiter(loaded, startup.timeoutMs));
  } catch (e) {
    await audit.close().catch(() => {});
    if (options.auditStore === undefined) await store.close().catch(() => {});
    throw e;
  }
  const gov = new Governor(loaded, identity, store, audit, limiter, options, warn);
  const resumed = audit.resumed;
  if (resumed !== null) {
    // On record, in the log itself: which unsigned records this writer found, checked and signs from now on.
    const who = resumed.previous;
    const reason =
      `resumed log ${audit.logId} over records ${resumed.from} to ${resumed.to}, left unsigned by ` +
      (who === null
        ? "a writer that stopped cleanly (accepted by audit.resume_unsigned_tail)"
        : `${who.label} (host ${who.host}, pid ${who.pid}), which stopped without signing them`) +
      "; their hashes and links were checked";
    warn(reason);
    gov.recordEvent({
      kind: "admin",
      tenant: null,
      user: null,
      email: null,
      agent: null,
      tier: null,
      chain: [],
      tool: null,
      args_digest: null,
      args: { from: resumed.from, to: resumed.to, previous: who },
      decision: "allow",
      reason_code: "ok",
      reason,
      rule: null,
      outcome: "none",
      trace_id: null,
      call_id: newCallId(),
    });
  }
  if (options.closeOnSignals === true) closeOnSignals(gov, warn);
  return gov;
}

function closeOnSignals(gov: Governor, warn: (m: string) => void): void {
  const onSignal = (signal: NodeJS.Signals) => {
    gov.close().then(
      () => process.exit(0),
      (e: unknown) => {
        warn(`${signal}: could not flush the audit: ${(e as Error).message}`);
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", onSignal);
  process.once("SIGINT", onSignal);
}

/** Where the development issuer's key lives for a config: `keys/dev-issuer.jwk` next to the config file. */
export function devKeyPath(loaded: Pick<LoadedConfig, "baseDir">): string {
  return resolve(loaded.baseDir, "keys/dev-issuer.jwk");
}

/**
 * The audit log id a config names: `audit.log_id`, else `onbehalf@<hostname>`. Without a configured id, a
 * process that finds `onbehalf@<hostname>` held by another live process takes `onbehalf@<hostname>/2` (and so
 * on): one log per process, the same one again after a restart. Checkpoints are signed under this name.
 */
export function auditLogId(loaded: Pick<LoadedConfig, "config">): string {
  return loaded.config.audit.log_id ?? `onbehalf@${hostname()}`;
}

/** The key file that signs audit checkpoints. */
export function auditKeyPath(loaded: Pick<LoadedConfig, "config" | "baseDir">): string {
  return resolve(loaded.baseDir, loaded.config.audit.signing_key);
}

/** The writer's journal directory (see src/audit/journal.ts): `audit.journal`, else beside the audit key. */
export function auditJournalDir(loaded: Pick<LoadedConfig, "config" | "baseDir">): string {
  const configured = loaded.config.audit.journal;
  return configured === undefined ? journalDir(auditKeyPath(loaded)) : resolve(loaded.baseDir, configured);
}

/** The issuers a config trusts: its `issuers`, plus the development issuer when `dev_issuer: true`. */
export function trustedIssuers(loaded: Pick<LoadedConfig, "config" | "baseDir">): IssuerConfig[] {
  const issuers = [...loaded.config.issuers];
  if (loaded.config.dev_issuer)
    issuers.push(devIssuerConfig(loadOrCreateSigningKey(devKeyPath(loaded)).publicJwk));
  return issuers;
}

/** Open the audit store a config names (loading its driver only then, so the core import stays light). */
export async function openAuditStore(loaded: Pick<LoadedConfig, "config" | "baseDir">): Promise<AuditStore> {
  const url = loaded.config.audit.store;
  if (url.startsWith("sqlite:")) {
    const path = url.slice("sqlite:".length);
    const { openSqliteStore } = await import("../audit/sqlite.js");
    return openSqliteStore(path === ":memory:" ? path : resolve(loaded.baseDir, path));
  }
  if (url.startsWith("postgres://") || url.startsWith("postgresql://")) {
    const { openPostgresStore } = await import("../audit/postgres.js");
    return openPostgresStore(url);
  }
  throw new OnbehalfError(
    "ERR_CONFIG_INVALID",
    `audit.store "${url}" is not supported: use sqlite:./onbehalf.db, sqlite::memory: or postgres://user@host/db`,
  );
}

/** The audit store's address for messages (no password). */
function describeStore(url: string): string {
  if (url.startsWith("sqlite:")) return `SQLite at ${url.slice("sqlite:".length)}`;
  return `PostgreSQL at ${redactUrl(url)}`;
}

function once(f: () => void): () => void {
  let done = false;
  return () => {
    if (!done) f();
    done = true;
  };
}

async function openLimiter(loaded: LoadedConfig, startupTimeoutMs: number): Promise<RateLimiter> {
  const store = loaded.config.limits.store;
  if (store === "memory") return createMemoryLimiter();
  if (store.startsWith("redis://") || store.startsWith("rediss://")) {
    const { createRedisLimiter, redisReady } = await import("../limits/redis.js");
    const limiter = createRedisLimiter(store);
    try {
      await redisReady(limiter.redis, "the rate-limit store", store, startupTimeoutMs);
    } catch (e) {
      await limiter.close();
      throw e;
    }
    return limiter;
  }
  throw new OnbehalfError(
    "ERR_CONFIG_INVALID",
    `limits.store "${store}" is not supported: use memory or redis://host:6379`,
  );
}

export class Governor {
  private loaded: LoadedConfig;
  private policyWithTools: CompiledPolicy;
  private readonly codeTools = new Map<string, ToolConfig>();
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
    options: GovernorOptions,
    private readonly warn: (message: string) => void,
  ) {
    this.loaded = loaded;
    this.policyWithTools = loaded.policy;
    this.source = options.source ?? "inproc";
    this.deps = {
      policy: () => this.policyWithTools,
      audit,
      limiter,
      durability: loaded.config.audit.durability,
      now: options.now ?? Date.now,
    };
    this.ownApprovalStore =
      options.approvalStore === undefined ? createMemoryApprovalStore(this.deps.now) : undefined;
    this.approvals = new Approvals({
      store: options.approvalStore ?? this.ownApprovalStore!,
      policy: () => this.policyWithTools,
      now: this.deps.now,
      record: (fields) => this.recordEvent(fields),
      acknowledged: (seq) => this.audit.acknowledged(seq),
      auditProblem: () => this.audit.problem,
      ttlMs: options.approvalTtlMs ?? 15 * 60_000,
    });
  }

  /** The validated configuration in force. */
  get config(): Config {
    return this.loaded.config;
  }

  /** The compiled policy in force, tools declared in code included. */
  get policy(): CompiledPolicy {
    return this.policyWithTools;
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
    if (
      typeof authorization === "string" &&
      !authorization.includes(" ") &&
      authorization.split(".").length === 3
    ) {
      return this.identity.verify(authorization);
    }
    return this.identity.verifyAuthorization(authorization);
  }

  /**
   * Run `fn` acting for `principal` through an agent; every governed call inside sees them.
   *
   * @example
   * await gov.runAs(principal, { agent: "support-bot", tier: "interactive" }, () => getCustomer({ id: "c-1" }));
   */
  runAs<T>(principal: Principal, options: RunOptions, fn: () => T): T {
    return runAs(principal, options, fn);
  }

  /**
   * Run `fn` as a sub-agent of the current run: the chain grows, scopes only narrow.
   *
   * @example
   * await gov.delegate("specialist", { scopes: ["email.read"], tier: "subagent" }, () => readEmail(args));
   */
  delegate<T>(agent: string, options: DelegateOptions, fn: () => T): T {
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
    this.registerTool(definition);
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

  /** The clock the governor decides with (ms). */
  now(): number {
    return this.deps.now();
  }

  /** The tenants and tools in force, as JSON, for sharing admin changes between instances. */
  dynamicConfig(): string {
    return JSON.stringify({ tenants: this.config.tenants, tools: this.config.tools });
  }

  /** Apply tenants and tools shared by another instance (validated like the file). */
  applyDynamicConfig(snapshot: string): void {
    const { tenants, tools } = JSON.parse(snapshot) as { tenants: unknown; tools: unknown };
    this.reconfigure({ ...this.config, tenants, tools });
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
    const id = (tenant as { id?: unknown } | null)?.id;
    if (typeof id !== "string") throw new OnbehalfError("ERR_INVALID_ARGUMENT", "a tenant needs an id");
    const tenants = this.config.tenants.filter((t) => t.id !== id);
    this.reconfigure({ ...this.config, tenants: [...tenants, tenant] });
  }

  /** Apply a JSON merge patch (RFC 7396) to a tenant's policy, live on the next call. */
  patchTenantPolicy(id: string, patch: unknown): void {
    const tenant = this.config.tenants.find((t) => t.id === id);
    if (tenant === undefined) throw new OnbehalfError("ERR_INVALID_ARGUMENT", `no tenant "${id}"`);
    this.replaceTenant({ ...tenant, policy: mergePatch(tenant.policy, patch) });
  }

  /** Remove a tenant: its users' calls are denied from the next call on. Returns whether it existed. */
  deleteTenant(id: string): boolean {
    const tenants = this.config.tenants.filter((t) => t.id !== id);
    if (tenants.length === this.config.tenants.length) return false;
    this.reconfigure({ ...this.config, tenants });
    return true;
  }

  /** Add or replace a tool declaration, live on the next call. */
  putTool(tool: unknown): void {
    const name = (tool as { name?: unknown } | null)?.name;
    if (typeof name !== "string") throw new OnbehalfError("ERR_INVALID_ARGUMENT", "a tool needs a name");
    this.reconfigure({ ...this.config, tools: [...this.config.tools.filter((t) => t.name !== name), tool] });
  }

  /** Validate a whole new config (tools, tenants and limits apply live; issuers and stores do not). */
  private reconfigure(raw: unknown): void {
    const loaded = loadConfigObject(raw, this.loaded.baseDir);
    const merged = this.mergeTools(loaded.policy, loaded.config);
    this.loaded = loaded;
    this.policyWithTools = merged;
  }

  /**
   * Declare a tool that something else executes (an upstream MCP server, a remote agent), so policy can
   * decide its calls. Merged with the config's entry like `governed()` tools.
   */
  declare(definition: Omit<GovernedToolDefinition<never, unknown>, "execute">): void {
    this.registerTool(definition);
  }

  /** Register (or re-register) a tool declared in code, merging it with the config's entry. */
  private registerTool(definition: Omit<GovernedToolDefinition<never, unknown>, "execute">): void {
    const parsed = ToolConfig.safeParse({
      name: definition.name,
      description: definition.description,
      required_scopes: definition.required_scopes,
      sensitivity: definition.sensitivity,
      redact: definition.redact,
      input_schema: definition.input_schema,
    });
    if (!parsed.success) {
      throw new OnbehalfError(
        "ERR_INVALID_ARGUMENT",
        `tool "${definition.name}": ${parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`,
      );
    }
    const warning = lintTool(
      definition.name,
      definition.input_schema ?? this.configTool(definition.name)?.input_schema,
    );
    if (warning !== undefined) this.warn(warning);
    const previous = this.codeTools.get(definition.name);
    // Declaring a tool again (an adapter, then gov.governed, say) adds to what was declared: it never drops a
    // required scope or a redaction path. Other fields take the newer declaration's value where it gives one.
    const next: ToolConfig =
      previous === undefined
        ? parsed.data
        : {
            ...parsed.data,
            description: parsed.data.description ?? previous.description,
            input_schema: parsed.data.input_schema ?? previous.input_schema,
            sensitivity:
              definition.sensitivity === undefined ? previous.sensitivity : parsed.data.sensitivity,
            required_scopes: union(previous.required_scopes, parsed.data.required_scopes),
            redact: union(previous.redact, parsed.data.redact),
          };
    this.codeTools.set(definition.name, next);
    try {
      this.policyWithTools = this.mergeTools(this.loaded.policy);
    } catch (e) {
      if (previous === undefined) this.codeTools.delete(definition.name);
      else this.codeTools.set(definition.name, previous);
      throw e;
    }
  }

  private configTool(name: string, config: Config = this.config): ToolConfig | undefined {
    return config.tools.find((t) => t.name === name);
  }

  /**
   * Tools declared in code join the policy. Where the config declares the same tool, its fields win, except
   * required scopes and redaction paths, which are the union of both (code can only make a tool stricter).
   */
  private mergeTools(policy: CompiledPolicy, config: Config = this.config): CompiledPolicy {
    if (this.codeTools.size === 0) return policy;
    const tools = new Map(policy.tools);
    const issues: CompileIssue[] = [];
    for (const [name, code] of this.codeTools) {
      const fromConfig = this.configTool(name, config);
      const merged: ToolConfig =
        fromConfig === undefined
          ? code
          : {
              ...code,
              ...fromConfig,
              required_scopes: union(fromConfig.required_scopes, code.required_scopes),
              redact: union(fromConfig.redact, code.redact),
            };
      tools.set(name, compileTool(merged, ["tools", name], issues) satisfies CompiledTool);
    }
    if (issues.length > 0) {
      throw new OnbehalfError("ERR_INVALID_ARGUMENT", issues.map((i) => i.message).join("; "));
    }
    return { ...policy, tools };
  }
}

/** RFC 7396 JSON merge patch: objects merge recursively, null deletes, anything else replaces. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== "object" || Array.isArray(patch)) return patch;
  const out: Record<string, unknown> =
    target !== null && typeof target === "object" && !Array.isArray(target) ? { ...(target as object) } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete out[key];
    else
      Object.defineProperty(out, key, {
        value: mergePatch(out[key], value),
        enumerable: true,
        writable: true,
        configurable: true,
      });
  }
  return out;
}

function union(a: readonly string[], b: readonly string[]): string[] {
  return [...new Set([...a, ...b])];
}

export type { AuditRecord };
