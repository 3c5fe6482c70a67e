/**
 * What the control plane remembers between requests: calls waiting for their result, approvals, and the
 * live policy (admin changes). In memory for one instance; in Redis when several instances must share it
 * (`limits.store: redis://…`), so a result or an approval may arrive at any instance.
 */

import type { AuditFields } from "../audit/record.js";
import type { CapabilityLayer } from "../config/capabilities.js";
import type { PostTransform } from "../config/policy.js";
import { type ApprovalStore, createMemoryApprovalStore } from "../govern/approvals.js";

/** An allowed (or asked) call whose result has not been reported yet. */
export interface OpenCall {
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
  /** The approval this call waits for (an `ask`), or ran under (an approved call). */
  readonly approvalId: string | null;
  /** For an approved call: the full arguments and the run's scopes, to decide it again at its report. */
  readonly args?: unknown;
  readonly scopes?: readonly string[];
  /** For an approved call: the run's task capabilities, to decide it again with them. */
  readonly capabilities?: readonly CapabilityLayer[];
}

export interface StateStore extends ApprovalStore {
  putCall(call: OpenCall, ttlMs: number): Promise<void>;
  getCall(callId: string): Promise<OpenCall | null>;
  /** Remove and return a pending call: a result is accepted once. */
  takeCall(callId: string): Promise<OpenCall | null>;
  /** Share the live tenants and tools with the other instances. */
  /**
   * Store the shared config record `next` if the stored one is still `previous` (null: none), and tell the other
   * instances; false when another instance changed it meanwhile (nothing stored).
   */
  saveConfig(next: string, previous: string | null): Promise<boolean>;
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
  const calls = new Map<string, { call: OpenCall; until: number }>();
  const approvals = createMemoryApprovalStore(now);
  const spooled = new Map<string, number>();
  let config: string | null = null;
  const live = (id: string) => {
    const e = calls.get(id);
    if (e !== undefined && e.until <= now()) {
      calls.delete(id);
      return undefined;
    }
    return e;
  };
  const sweep = setInterval(() => {
    for (const [id] of calls) live(id);
    for (const [id, until] of spooled) if (until <= now()) spooled.delete(id);
  }, 60_000);
  sweep.unref();

  return {
    ...approvals,
    async putCall(call, ttlMs) {
      calls.set(call.callId, { call, until: now() + ttlMs });
    },
    async getCall(callId) {
      return live(callId)?.call ?? null;
    },
    async takeCall(callId) {
      const e = live(callId);
      calls.delete(callId);
      return e?.call ?? null;
    },
    async saveConfig(next, previous) {
      if (config !== previous) return false;
      config = next;
      return true;
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
      approvals.close();
    },
  };
}
