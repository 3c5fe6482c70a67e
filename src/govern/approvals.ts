/**
 * Approvals: a decision `ask` holds a call for a human. One model for every path (the control plane, the MCP
 * gateway, the in-process framework adapters):
 *
 * - an approval is bound to one call: its call id, and the user, tenant, tool and argument digest it was asked
 *   for; it can only let that call go ahead;
 * - every change of status is a compare-and-set on the status (pending → approved | denied | expired |
 *   revoked; approved → used | revoked): of two approvers deciding at once, one wins;
 * - nobody approves their own request;
 * - the call is decided again under the policy in force when the approver decides and again when it runs: a
 *   revocation, a removed user or a changed rule wins over the approval, and is audited as such;
 * - it is used once.
 *
 * Approvals come only from here (an approver through the control plane's API, or the application calling
 * `gov.approvals.decide()` for an approver it authenticated), never from anything a requester can send.
 */
import { createHash } from "node:crypto";
import { EventEmitter } from "node:events";
import type { AuditFields } from "../audit/record.js";
import { digestArgs } from "../audit/record.js";
import type { CapabilityLayer } from "../config/capabilities.js";
import type { Tier } from "../config/policy.js";
import { type RunContext, runContextOf } from "../context/run.js";
import { type Decision, denial, type ReasonCode } from "../decision.js";
import { OnbehalfError } from "../errors.js";
import type { Principal } from "../identity/principal.js";
import type { CompiledPolicy } from "../policy/compile.js";
import { decide } from "../policy/decide.js";
import { callInput } from "./pipeline.js";

/** Denials that say nothing about the call, only that something it needs is down for now. */
const PASSING: ReadonlySet<ReasonCode> = new Set<ReasonCode>(["fail_closed"]);

export type ApprovalStatus = "pending" | "approved" | "denied" | "expired" | "revoked" | "used";

/** An approval as approvers and requesters see it. */
export interface Approval {
  readonly id: string;
  /** The call that asked. */
  readonly call_id: string;
  readonly status: ApprovalStatus;
  readonly tenant: string | null;
  readonly user: string;
  readonly email: string | null;
  readonly agent: string;
  readonly chain: readonly string[];
  readonly tool: string;
  /** The arguments as audited (redacted). */
  readonly args: unknown;
  /** `sha256:<hex>` of the full arguments: the approval lets only a call with these arguments go ahead. */
  readonly args_digest: string;
  readonly rule: string | null;
  readonly reason: string;
  readonly created_at: string;
  readonly expires_at: string;
  readonly decided_by?: string;
  readonly decided_at?: string;
  readonly note?: string;
  readonly used_at?: string;
}

/** The request as it was made, kept beside the approval (never shown) to decide the call again. */
export interface ApprovalRequest {
  readonly principal: Principal;
  readonly chain: readonly string[];
  readonly tier: Tier;
  /** Every hop's tier (absent in approvals stored before hops carried one: `tier` for each). */
  readonly tiers?: readonly Tier[];
  readonly scopes: readonly string[];
  readonly args: unknown;
  /** The run's task capabilities (absent: none, or an approval stored before runs carried them). */
  readonly capabilities?: readonly CapabilityLayer[];
}

/** A change of status, with the fields that go with it; a field set to `undefined` is removed. */
export interface ApprovalUpdate {
  readonly status: ApprovalStatus;
  readonly decided_by?: string;
  readonly decided_at?: string;
  readonly note?: string;
  readonly used_at?: string | undefined;
}

/** The approval with `update` applied (what every store writes on a transition). */
export function withUpdate(a: StoredApproval, update: ApprovalUpdate): StoredApproval {
  const next: Record<string, unknown> = { ...a };
  for (const [key, value] of Object.entries(update)) {
    if (value === undefined) delete next[key];
    else next[key] = value;
  }
  return next as unknown as StoredApproval;
}

/** What a store keeps: the approval and its request. */
export interface StoredApproval extends Approval {
  readonly request: ApprovalRequest;
}

/** Where approvals live: in memory for one process, in Redis for several instances (the control plane's). */
export interface ApprovalStore {
  /** Store a new approval; `binding` indexes it for {@link ApprovalStore.findApproval}. */
  putApproval(approval: StoredApproval, binding: string, ttlMs: number): Promise<void>;
  getApproval(id: string): Promise<StoredApproval | null>;
  /** The newest approval opened for this binding (user, tenant, tool, argument digest), if any. */
  findApproval(binding: string): Promise<StoredApproval | null>;
  listApprovals(status: ApprovalStatus | undefined): Promise<StoredApproval[]>;
  /**
   * Compare-and-set on the status: move the approval from `from` to `update.status` (with the update's other
   * fields); resolves to the new approval, or null when its status is not `from` (any more).
   */
  transitionApproval(
    id: string,
    from: ApprovalStatus,
    update: ApprovalUpdate,
  ): Promise<StoredApproval | null>;
  /**
   * Resolve when the approval leaves `pending`, or after `timeoutMs` (or once `signal` aborts: a server that
   * shuts down) with its current state.
   */
  waitApproval(id: string, timeoutMs: number, signal?: AbortSignal): Promise<StoredApproval | null>;
}

/** Who decides: an admin (the control plane's admin token) or an approver acting as a user. */
export interface Approver {
  /** The approver's user id (or `admin`), recorded as `decided_by`. */
  readonly id: string;
}

/** A usable approval, taken for one call: pass it to `gov.begin(..., { approved })`. */
export interface ApprovalGrant {
  readonly approval: Approval;
  /** `gov.begin` options: the call proceeds as the approved call, with its call id. */
  readonly begin: {
    readonly callId: string;
    readonly approved: { readonly id: string; readonly by: string };
  };
}

/** Why an approval cannot let a call go ahead (yet). */
export interface ApprovalRefusal {
  readonly reason_code: ReasonCode;
  readonly reason: string;
  readonly approval: Approval | null;
}

export interface ApprovalsDeps {
  readonly store: ApprovalStore;
  policy(): CompiledPolicy;
  now(): number;
  /** Append an audit record (the governor's `recordEvent`); returns its sequence number. */
  record(fields: Omit<AuditFields, "time" | "source" | "latency_us" | "shadow">): number;
  /** Resolves once record `seq` has committed (rejects when the store fails). */
  acknowledged(seq: number): Promise<void>;
  /** Why the audit cannot take records now, or null. */
  auditProblem(): string | null;
  /** How long an approval waits for a human. */
  readonly ttlMs: number;
}

/** The approval binding of a call: who, where, which tool, which arguments. */
export function bindingOf(tenant: string | null, user: string, tool: string, argsDigest: string): string {
  return createHash("sha256")
    .update(JSON.stringify([tenant, user, tool, argsDigest]))
    .digest("hex");
}

/** An approval without the request kept beside it: what the API shows. */
export function publicApproval(a: StoredApproval | Approval): Approval {
  const { request: _request, ...shown } = a as StoredApproval;
  return shown;
}

/**
 * The approvals of one governor (`gov.approvals`).
 *
 * @example
 * const pending = await gov.approvals.list("pending");
 * await gov.approvals.decide(pending[0].id, { id: "mona" }, "approve", "known customer");
 */
export class Approvals {
  /** Aborted by `endWaits()`: every wait answers now, and later ones at once. */
  private readonly ending = new AbortController();

  constructor(private readonly deps: ApprovalsDeps) {}

  /**
   * End every wait now, and answer later ones at once, with the approval as it is (a server shutting down must
   * not be held open by long-polls; the waiting client asks again, of another instance).
   */
  endWaits(): void {
    this.ending.abort();
  }

  /** The approval, its expiry applied (a pending approval past its time reads as expired). */
  async get(id: string): Promise<Approval | null> {
    const a = await this.deps.store.getApproval(id);
    return a === null ? null : this.withExpiry(a);
  }

  async list(status?: ApprovalStatus): Promise<Approval[]> {
    const all = (await this.deps.store.listApprovals(undefined)).map((a) => this.withExpiry(a));
    return all.filter((a) => status === undefined || a.status === status);
  }

  /** Wait up to `timeoutMs` for a pending approval to be decided. */
  async wait(id: string, timeoutMs: number): Promise<Approval | null> {
    const found = await this.deps.store.getApproval(id);
    if (found === null) return null;
    const remaining = Date.parse(found.expires_at) - this.deps.now();
    const waitMs = this.ending.signal.aborted ? 0 : Math.max(0, Math.min(timeoutMs, remaining));
    const latest = await this.deps.store.waitApproval(id, waitMs, this.ending.signal);
    return this.withExpiry(latest ?? found);
  }

  /**
   * Open the approval an `ask` attempt needs, or return the one already open for the same call (same user,
   * tenant, tool and arguments), so a repeated call waits on one approval instead of opening another.
   */
  async open(
    attempt: {
      readonly callId: string;
      readonly fields: AuditFields;
      readonly run: RunContext | undefined;
    },
    args: unknown,
  ): Promise<Approval> {
    const f = attempt.fields;
    const run = attempt.run;
    if (run === undefined || f.user === null || f.args_digest === null || f.tool === null) {
      throw new OnbehalfError(
        "ERR_INVALID_ARGUMENT",
        "only a decided call of a known user can ask for approval",
      );
    }
    const binding = bindingOf(f.tenant, f.user, f.tool, f.args_digest);
    const known = await this.deps.store.findApproval(binding);
    if (known !== null) {
      const status = this.withExpiry(known).status;
      if (status === "pending" || status === "approved") return publicApproval(known);
    }
    const now = this.deps.now();
    const approval: StoredApproval = {
      id: `apr_${attempt.callId}`,
      call_id: attempt.callId,
      status: "pending",
      tenant: f.tenant,
      user: f.user,
      email: f.email,
      agent: f.agent ?? "",
      chain: f.chain,
      tool: f.tool,
      // A copy, as the record has it: the caller's arguments object may change after the call was decided.
      args: f.argsCanonical === undefined ? f.args : JSON.parse(f.argsCanonical),
      args_digest: f.args_digest,
      rule: f.rule,
      reason: f.reason,
      created_at: new Date(now).toISOString(),
      expires_at: new Date(now + this.deps.ttlMs).toISOString(),
      request: {
        principal: run.principal,
        chain: run.chain,
        tier: run.tier,
        tiers: run.tiers,
        scopes: [...run.scopes],
        args,
        ...(run.capabilities.length === 0 ? {} : { capabilities: run.capabilities }),
      },
    };
    // Kept a day past expiry so the requester can still read why it ended.
    await this.deps.store.putApproval(approval, binding, this.deps.ttlMs + 86_400_000);
    return publicApproval(approval);
  }

  /**
   * An approver decides. Nobody decides their own request; an expired or decided approval is a conflict. To
   * approve, the call is decided again under the policy in force: if that denies it now (a revoked
   * permission, a removed user, a new rule), the approval is `revoked` instead, and audited as such.
   */
  async decide(
    id: string,
    approver: Approver,
    verdict: "approve" | "deny",
    note?: string,
  ): Promise<Approval> {
    // A decision nobody could audit is not taken.
    const problem = this.deps.auditProblem();
    if (problem !== null) throw new OnbehalfError("ERR_AUDIT_UNAVAILABLE", `not decided: ${problem}`);
    const found = await this.deps.store.getApproval(id);
    if (found === null) throw new OnbehalfError("ERR_NOT_FOUND", `no approval ${id}`);
    if (approver.id === found.user)
      throw new OnbehalfError("ERR_POLICY_DENIED", "nobody approves their own request");
    if (this.withExpiry(found).status === "expired") {
      await this.deps.store.transitionApproval(id, "pending", { status: "expired" });
      throw new OnbehalfError("ERR_CONFLICT", `approval ${id} expired at ${found.expires_at}`);
    }
    if (found.status !== "pending")
      throw new OnbehalfError("ERR_CONFLICT", `approval ${id} was already decided (${found.status})`);
    const decided = {
      decided_by: approver.id,
      decided_at: new Date(this.deps.now()).toISOString(),
      ...(note === undefined ? {} : { note }),
    };
    if (verdict === "approve") {
      const now = this.decideAgain(found, found.request.principal);
      if (now.decision === "deny") {
        const revoked = await this.deps.store.transitionApproval(id, "pending", {
          status: "revoked",
          ...decided,
        });
        if (revoked === null) throw new OnbehalfError("ERR_CONFLICT", `approval ${id} was already decided`);
        this.audit(
          revoked,
          "deny",
          now.reason_code,
          `not approvable: the policy in force denies it (${now.reason_code}: ${now.reason}); ${approver.id} approved too late`,
        );
        throw new OnbehalfError(
          "ERR_CONFLICT",
          `approval ${id} cannot be approved: the policy in force now denies this call (${now.reason_code}: ${now.reason})`,
        );
      }
    }
    const status = verdict === "approve" ? "approved" : "denied";
    const next = await this.deps.store.transitionApproval(id, "pending", { status, ...decided });
    if (next === null) throw new OnbehalfError("ERR_CONFLICT", `approval ${id} was already decided`);
    const approved = status === "approved";
    const seq = this.audit(
      next,
      approved ? "allow" : "deny",
      approved ? "ok" : "approval_denied",
      `${approved ? "approved" : "denied"} by ${approver.id}${note ? `: ${note}` : ""}`,
    );
    // Answered once on record. (Should the store fail right now, the decision stands and its record waits in the
    // queue; the call it approves still runs only after its own attempt record, naming the approver, commits.)
    await this.deps.acknowledged(seq);
    return publicApproval(next);
  }

  /**
   * Take the approval of a call that is about to run: it must be approved, for this user, tenant, tool and
   * arguments, and unused; it is then used up (compare-and-set, so it lets exactly one call through). With an
   * `id`, that approval; without, the newest approval opened for this call. The caller then decides the call
   * again (`gov.begin(run, tool, args, grant.begin)`), so the policy in force still wins over the approval.
   */
  async take(
    run: RunContext,
    tool: string,
    args: unknown,
    id?: string,
  ): Promise<ApprovalGrant | ApprovalRefusal> {
    const p = run.principal;
    const digest = safeDigest(args);
    const binding = digest === null ? null : bindingOf(p.tenant, p.user, tool, digest);
    const found =
      id !== undefined
        ? await this.deps.store.getApproval(id)
        : binding === null
          ? null
          : await this.deps.store.findApproval(binding);
    if (found === null) {
      return refusal(
        "approval_required",
        id === undefined ? "this call needs a human's approval" : `no approval ${id}`,
        null,
      );
    }
    if (binding !== bindingOf(found.tenant, found.user, found.tool, found.args_digest)) {
      return refusal(
        "approval_required",
        `approval ${found.id} is for another call (another user, tool or arguments): ask for this one`,
        null,
      );
    }
    const a = this.withExpiry(found);
    switch (a.status) {
      case "pending":
        return refusal("approval_required", `waiting for a human to approve (approval ${a.id})`, a);
      case "denied":
        return refusal(
          "approval_denied",
          `denied by ${a.decided_by ?? "an approver"}${a.note ? `: ${a.note}` : ""}`,
          a,
        );
      case "expired":
        return refusal("approval_expired", "nobody approved the call in time", a);
      case "revoked":
        return refusal(
          "approval_denied",
          `approval ${a.id} was revoked: the policy in force denies the call`,
          a,
        );
      case "used":
        return refusal(
          "approval_required",
          `approval ${a.id} was used already: each approval lets one call through`,
          a,
        );
    }
    const used = await this.deps.store.transitionApproval(a.id, "approved", {
      status: "used",
      used_at: new Date(this.deps.now()).toISOString(),
    });
    if (used === null) {
      return refusal(
        "approval_required",
        `approval ${a.id} was used already: each approval lets one call through`,
        a,
      );
    }
    return {
      approval: publicApproval(used),
      begin: { callId: used.call_id, approved: { id: used.id, by: used.decided_by ?? "an approver" } },
    };
  }

  /**
   * A taken approval whose call did not run, because deciding it again denied it. A denial of the policy in
   * force revokes the approval (audited), so it is not mistaken for one that let a call through. A failure that
   * passes (the audit store or the rate-limit store unavailable: `fail_closed`) gives it back, approved, so the
   * human's decision is not lost to an outage: the same call may be tried again.
   */
  async notRun(grant: ApprovalGrant, decision: Decision): Promise<void> {
    const id = grant.approval.id;
    if (PASSING.has(decision.reason_code)) {
      await this.deps.store.transitionApproval(id, "used", { status: "approved", used_at: undefined });
      return;
    }
    const next = await this.deps.store.transitionApproval(id, "used", { status: "revoked" });
    if (next !== null) {
      this.audit(
        next,
        "deny",
        decision.reason_code,
        `revoked before the call ran: the policy in force denies it (${decision.reason_code}: ${decision.reason})`,
      );
    }
  }

  /** Decide the approval's call again under the policy in force, as `principal` (the requester, now). */
  decideAgain(a: StoredApproval, principal: Principal): Decision {
    const r = a.request;
    let run: RunContext;
    try {
      run = runContextOf(principal, {
        chain: r.chain,
        tier: r.tier,
        ...(r.tiers === undefined ? {} : { tiers: r.tiers }),
        scopes: r.scopes,
        ...(r.capabilities === undefined ? {} : { capabilities: r.capabilities }),
      });
    } catch (e) {
      return denial("error", `the request cannot be decided again: ${(e as Error).message}`);
    }
    const encoded = safeDigest(r.args, true);
    try {
      return decide(this.deps.policy(), callInput(run, a.tool, r.args, encoded ?? 0, this.deps.now()));
    } catch (e) {
      return denial("error", `policy evaluation failed: ${(e as Error).message}`);
    }
  }

  private withExpiry<A extends Approval>(a: A): A {
    return a.status === "pending" && Date.parse(a.expires_at) <= this.deps.now()
      ? { ...a, status: "expired" }
      : a;
  }

  private audit(a: Approval, decision: "allow" | "deny", reason_code: ReasonCode, reason: string): number {
    return this.deps.record({
      kind: "approval",
      tenant: a.tenant,
      user: a.user,
      email: a.email,
      agent: a.agent,
      tier: null,
      chain: a.chain,
      tool: a.tool,
      args_digest: a.args_digest,
      args: a.args,
      decision,
      reason_code,
      reason,
      rule: a.rule,
      outcome: decision === "allow" ? "pending" : "none",
      trace_id: null,
      call_id: a.call_id,
    });
  }
}

function refusal(reason_code: ReasonCode, reason: string, approval: Approval | null): ApprovalRefusal {
  return { reason_code, reason, approval: approval === null ? null : publicApproval(approval) };
}

/** `digestArgs` that answers null (or the byte size, with `bytes`) instead of throwing on what JSON cannot hold. */
function safeDigest(args: unknown): string | null;
function safeDigest(args: unknown, bytes: true): number | null;
function safeDigest(args: unknown, bytes?: true): string | number | null {
  try {
    const d = digestArgs(args);
    return bytes === true ? d.bytes : d.digest;
  } catch {
    return null;
  }
}

/**
 * Approvals kept in this process (a governor's default; the control plane shares them through Redis). At most
 * `max` are kept, and `maxPerUser` of one requester's: a new one makes room by dropping the oldest (waiting or
 * decided) — its own requester's first, so no user pushes out another's — whose requester then finds no
 * approval (an asked call waiting for it is audited as expired when its own wait ends).
 *
 * @example
 * const store = createMemoryApprovalStore();
 */
export function createMemoryApprovalStore(
  now: () => number = Date.now,
  max = 10_000,
  maxPerUser = 1_000,
): ApprovalStore & { close(): void } {
  const approvals = new Map<string, { approval: StoredApproval; until: number; binding: string }>();
  const bindings = new Map<string, string>();
  /** Each requester's approval ids, oldest first. */
  const ofUser = new Map<string, Set<string>>();
  const drop = (id: string) => {
    const e = approvals.get(id);
    if (e === undefined) return;
    approvals.delete(id);
    if (bindings.get(e.binding) === id) bindings.delete(e.binding);
    const mine = ofUser.get(e.approval.user);
    mine?.delete(id);
    if (mine?.size === 0) ofUser.delete(e.approval.user);
  };
  const events = new EventEmitter();
  events.setMaxListeners(0);
  const live = (id: string) => {
    const e = approvals.get(id);
    if (e !== undefined && e.until <= now()) {
      drop(id);
      return undefined;
    }
    return e;
  };
  const sweep = setInterval(() => {
    for (const id of approvals.keys()) live(id);
    for (const [binding, id] of bindings) if (!approvals.has(id)) bindings.delete(binding);
  }, 60_000);
  sweep.unref();
  return {
    async putApproval(approval, binding, ttlMs) {
      const mine = ofUser.get(approval.user) ?? new Set<string>();
      for (const id of mine) {
        if (mine.size < maxPerUser) break;
        drop(id);
      }
      for (const id of approvals.keys()) {
        if (approvals.size < max) break;
        drop(id);
      }
      approvals.set(approval.id, { approval, until: now() + ttlMs, binding });
      bindings.set(binding, approval.id);
      ofUser.set(approval.user, mine.add(approval.id));
    },
    async getApproval(id) {
      return live(id)?.approval ?? null;
    },
    async findApproval(binding) {
      const id = bindings.get(binding);
      return id === undefined ? null : (live(id)?.approval ?? null);
    },
    async listApprovals(status) {
      return [...approvals.keys()]
        .map((id) => live(id)?.approval)
        .filter((a): a is StoredApproval => a !== undefined && (status === undefined || a.status === status))
        .sort((a, b) => a.created_at.localeCompare(b.created_at));
    },
    async transitionApproval(id, from, update) {
      const e = live(id);
      if (e === undefined || e.approval.status !== from) return null;
      e.approval = withUpdate(e.approval, update);
      events.emit(id, e.approval);
      return e.approval;
    },
    waitApproval(id, timeoutMs, signal) {
      const current = live(id)?.approval ?? null;
      if (current === null || current.status !== "pending" || timeoutMs <= 0 || signal?.aborted)
        return Promise.resolve(current);
      return new Promise((resolve) => {
        const done = (a: StoredApproval) => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", ended);
          resolve(a);
        };
        const ended = () => {
          clearTimeout(timer);
          events.off(id, done);
          resolve(live(id)?.approval ?? null);
        };
        const timer = setTimeout(ended, timeoutMs);
        signal?.addEventListener("abort", ended, { once: true });
        events.once(id, done);
      });
    },
    close() {
      clearInterval(sweep);
      events.removeAllListeners();
    },
  };
}
