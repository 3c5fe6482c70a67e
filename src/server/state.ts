/**
 * What the control plane remembers between requests: calls waiting for their result, approvals, and the
 * live policy (admin changes). In memory for one instance; in Redis when several instances must share it
 * (`limits.store: redis://…`), so a result or an approval may arrive at any instance.
 */
import { EventEmitter } from "node:events";
import type { AuditFields } from "../audit/record.js";
import type { PostTransform } from "../policy/schema.js";

/** An allowed (or asked) call whose result has not been reported yet. */
export interface PendingCall {
  readonly callId: string;
  readonly user: string;
  readonly tenant: string | null;
  readonly tool: string;
  readonly postTransform: PostTransform;
  /** Redaction paths added by rules (the tool's own come from the policy). */
  readonly redact: readonly string[];
  /** The attempt's audit fields; the outcome record repeats them. */
  readonly fields: AuditFields;
  /** Epoch ms when the call was decided. */
  readonly startedAt: number;
  readonly approvalId: string | null;
}

export type ApprovalStatus = "pending" | "approved" | "denied" | "expired";

export interface Approval {
  readonly id: string;
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
  readonly rule: string | null;
  readonly reason: string;
  readonly created_at: string;
  readonly expires_at: string;
  readonly decided_by?: string;
  readonly decided_at?: string;
  readonly note?: string;
}

export interface StateStore {
  putCall(call: PendingCall, ttlMs: number): Promise<void>;
  getCall(callId: string): Promise<PendingCall | null>;
  /** Remove and return a pending call: a result is accepted once. */
  takeCall(callId: string): Promise<PendingCall | null>;
  putApproval(approval: Approval, ttlMs: number): Promise<void>;
  getApproval(id: string): Promise<Approval | null>;
  listApprovals(status: ApprovalStatus | undefined): Promise<Approval[]>;
  /** Move a pending approval to `status`, atomically; null if it is not pending (any more). */
  decideApproval(
    id: string,
    update: Pick<Approval, "status" | "decided_by" | "decided_at" | "note">,
  ): Promise<Approval | null>;
  /** Resolve when the approval leaves `pending`, or after `timeoutMs` with its current state. */
  waitApproval(id: string, timeoutMs: number): Promise<Approval | null>;
  /** Share the live tenants and tools with the other instances. */
  saveConfig(snapshot: string): Promise<void>;
  loadConfig(): Promise<string | null>;
  /** Called when another instance changed the live config. */
  onConfig(listener: (snapshot: string) => void): void;
  /**
   * Claim a spooled record's call id for a minute (while it is stored); false when another request holds it.
   * Short on purpose: a claim left by a crash expires, and the client, which keeps its spool until answered,
   * replays it.
   */
  claimSpooled(callId: string): Promise<boolean>;
  /** Throws when the store cannot answer. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/**
 * The in-memory state store (one instance).
 *
 * @example
 * const state = createMemoryState();
 */
export function createMemoryState(now: () => number = Date.now): StateStore {
  const calls = new Map<string, { call: PendingCall; until: number }>();
  const approvals = new Map<string, { approval: Approval; until: number }>();
  const spooled = new Map<string, number>();
  const events = new EventEmitter();
  events.setMaxListeners(0);
  let config: string | null = null;
  const live = <T>(m: Map<string, { until: number } & T>, id: string) => {
    const e = m.get(id);
    if (e !== undefined && e.until <= now()) {
      m.delete(id);
      return undefined;
    }
    return e;
  };
  const sweep = setInterval(() => {
    for (const [id] of calls) live(calls, id);
    for (const [id] of approvals) live(approvals, id);
    for (const [id, until] of spooled) if (until <= now()) spooled.delete(id);
  }, 60_000);
  sweep.unref();

  return {
    async putCall(call, ttlMs) {
      calls.set(call.callId, { call, until: now() + ttlMs });
    },
    async getCall(callId) {
      return live(calls, callId)?.call ?? null;
    },
    async takeCall(callId) {
      const e = live(calls, callId);
      calls.delete(callId);
      return e?.call ?? null;
    },
    async putApproval(approval, ttlMs) {
      approvals.set(approval.id, { approval, until: now() + ttlMs });
    },
    async getApproval(id) {
      return live(approvals, id)?.approval ?? null;
    },
    async listApprovals(status) {
      return [...approvals.keys()]
        .map((id) => live(approvals, id)?.approval)
        .filter((a): a is Approval => a !== undefined && (status === undefined || a.status === status))
        .sort((a, b) => a.created_at.localeCompare(b.created_at));
    },
    async decideApproval(id, update) {
      const e = live(approvals, id);
      if (e === undefined || e.approval.status !== "pending") return null;
      e.approval = { ...e.approval, ...update };
      events.emit(id, e.approval);
      return e.approval;
    },
    waitApproval(id, timeoutMs) {
      const current = live(approvals, id)?.approval ?? null;
      if (current === null || current.status !== "pending" || timeoutMs <= 0) return Promise.resolve(current);
      return new Promise((resolve) => {
        const done = (a: Approval) => {
          clearTimeout(timer);
          resolve(a);
        };
        const timer = setTimeout(() => {
          events.off(id, done);
          resolve(live(approvals, id)?.approval ?? null);
        }, timeoutMs);
        events.once(id, done);
      });
    },
    async saveConfig(snapshot) {
      config = snapshot;
    },
    async loadConfig() {
      return config;
    },
    onConfig() {
      // one instance: nobody else changes the config
    },
    async claimSpooled(callId) {
      if ((spooled.get(callId) ?? 0) > now()) return false;
      spooled.set(callId, now() + 60_000);
      return true;
    },
    async ping() {},
    async close() {
      clearInterval(sweep);
      events.removeAllListeners();
    },
  };
}
