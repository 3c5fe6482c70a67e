/**
 * What the control plane remembers between requests: calls waiting for their result, approvals, and the
 * live policy (admin changes). In memory for one instance; in Redis when several instances must share it
 * (`limits.store: redis://…`), so a result or an approval may arrive at any instance.
 */

import type { AuditFields } from "../audit/record.js";
import type { CapabilityLayer } from "../config/capabilities.js";
import type { PostTransform } from "../config/policy.js";
import { OnbehalfError } from "../errors.js";
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

/** Why a call no longer waits for its result, when the store still knows (for the 404 of a late report). */
export type GoneReason = "expired" | "evicted" | "user_bound";

/** A call let go to make room for another: at the bound of all calls, or of its user's (`user_bound`). */
export interface EvictedCall {
  readonly call: OpenCall;
  readonly why: "evicted" | "user_bound";
}

/** How many calls and approvals the state store keeps at most (the oldest go first). */
export interface StateBounds {
  /** Calls waiting for their result (`server.max_pending_calls`). */
  readonly maxCalls: number;
  /** Approvals kept, waiting or decided (`server.max_approvals`). */
  readonly maxApprovals: number;
  /**
   * Calls of one user waiting at once (`server.max_pending_calls_per_user`): at it, that user's oldest goes, so
   * that no user (of any tenant) can push another's calls out.
   */
  readonly maxCallsPerUser: number;
  /** Approvals of one requester kept (`server.max_approvals_per_user`): at it, that requester's oldest goes. */
  readonly maxApprovalsPerUser: number;
}

export const DEFAULT_STATE_BOUNDS: StateBounds = {
  maxCalls: 50_000,
  maxApprovals: 10_000,
  maxCallsPerUser: 5_000,
  maxApprovalsPerUser: 1_000,
};

/**
 * Console sessions one identity keeps open at once (browsers, colleagues sharing an admin token): one more ends
 * its oldest. Nobody signing in again and again ends anyone else's session.
 */
export const MAX_CONSOLE_SESSIONS_PER_OWNER = 10;
/**
 * Console sessions kept in memory at most: past it, signing in is refused (429) until sessions end; a session
 * already open is never ended to make room. In Redis they go when their time is up.
 */
export const MAX_CONSOLE_SESSIONS = 10_000;

export interface StateStore extends ApprovalStore {
  /**
   * Remember a call until its result is reported or `ttlMs` passes. At its user's bound (`maxCallsPerUser`) that
   * user's oldest waiting call makes room, at the bound of all (`maxCalls`) the oldest of all: they are removed
   * and returned, for their outcome to be audited as `expired`.
   */
  putCall(call: OpenCall, ttlMs: number): Promise<readonly EvictedCall[]>;
  getCall(callId: string): Promise<OpenCall | null>;
  /** Remove and return a pending call: a result is accepted once. */
  takeCall(callId: string): Promise<OpenCall | null>;
  /**
   * Remove and return up to `limit` calls whose time ran out, for their outcome to be audited as `expired`.
   * With several instances each expired call is returned to exactly one of them.
   */
  expireCalls(limit: number): Promise<readonly OpenCall[]>;
  /**
   * Claim the one report of a call that waited nowhere (its report token brought it back) until `ttlMs` passes;
   * false when it was reported already.
   */
  claimReport(callId: string, ttlMs: number): Promise<boolean>;
  /** Why a call that is not waiting any more went, if it expired or was evicted lately; else null. */
  goneWhy(callId: string): Promise<GoneReason | null>;
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
  /**
   * Claim `key` until `ttlMs` passes: true for the first claim, false for every later one — across every instance
   * sharing the store. For values accepted once (a client assertion's `jti`); a claim is never forgotten before
   * its time.
   */
  claimOnce(key: string, ttlMs: number): Promise<boolean>;
  /**
   * Console sessions, by the SHA-256 of their id, as JSON, until `ttlMs` passes: shared by the instances that
   * share the store, so a browser signed in at one is signed in at all, and signed out at all. `owner` names
   * who signed in: past MAX_CONSOLE_SESSIONS_PER_OWNER of theirs, their oldest ends. In memory, past
   * MAX_CONSOLE_SESSIONS the session is refused (ERR_RATE_LIMITED).
   */
  putConsoleSession(hash: string, session: string, ttlMs: number, owner: string): Promise<void>;
  getConsoleSession(hash: string): Promise<string | null>;
  deleteConsoleSession(hash: string): Promise<void>;
  /** Throws when the store cannot answer. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/**
 * The in-memory state store (one instance). Calls wait in insertion order (a `Map`), so the oldest is the first
 * to go at the bound; ids of calls that expired or were evicted are remembered (as many as calls may wait) to
 * say why a late report finds nothing.
 *
 * @example
 * const state = createMemoryState({ maxCalls: 50_000, maxApprovals: 10_000 });
 */
export function createMemoryState(
  bounds: StateBounds = DEFAULT_STATE_BOUNDS,
  now: () => number = Date.now,
): StateStore {
  const calls = new Map<string, { call: OpenCall; until: number }>();
  const gone = new Map<string, GoneReason>();
  const approvals = createMemoryApprovalStore(now, bounds.maxApprovals, bounds.maxApprovalsPerUser);
  const spooled = new Map<string, number>();
  /** Values claimed once, until their time (only callers that proved who they are claim: see claimOnce). */
  const once = new Map<string, number>();
  const consoleSessions = new Map<string, { session: string; until: number; owner: string }>();
  /** The hashes of each owner's console sessions, oldest first. */
  const consoleOf = new Map<string, string[]>();
  const endConsoleSession = (hash: string) => {
    const e = consoleSessions.get(hash);
    if (e === undefined) return;
    consoleSessions.delete(hash);
    const rest = consoleOf.get(e.owner)?.filter((h) => h !== hash) ?? [];
    if (rest.length === 0) consoleOf.delete(e.owner);
    else consoleOf.set(e.owner, rest);
  };
  const endExpiredConsoleSessions = () => {
    for (const [hash, e] of consoleSessions) if (e.until <= now()) endConsoleSession(hash);
  };
  /** Reports taken by report token, each until its token expires: never forgotten sooner (a token is good once). */
  const reported = new Map<string, number>();
  /** The ids of each user's waiting calls, oldest first. */
  const callsOf = new Map<string, Set<string>>();
  let config: string | null = null;
  const drop = (id: string) => {
    const e = calls.get(id);
    if (e === undefined) return;
    calls.delete(id);
    const mine = callsOf.get(e.call.user);
    mine?.delete(id);
    if (mine?.size === 0) callsOf.delete(e.call.user);
  };
  const forget = (id: string, why: GoneReason) => {
    drop(id);
    gone.delete(id);
    gone.set(id, why);
    if (gone.size > bounds.maxCalls) gone.delete(gone.keys().next().value as string);
  };
  const live = (id: string) => {
    const e = calls.get(id);
    return e !== undefined && e.until > now() ? e : undefined;
  };
  const sweep = setInterval(() => {
    for (const [id, until] of spooled) if (until <= now()) spooled.delete(id);
    for (const [id, until] of reported) if (until <= now()) reported.delete(id);
    for (const [key, until] of once) if (until <= now()) once.delete(key);
    endExpiredConsoleSessions();
  }, 60_000);
  sweep.unref();

  return {
    ...approvals,
    async putCall(call, ttlMs) {
      const evicted: EvictedCall[] = [];
      const mine = callsOf.get(call.user) ?? new Set<string>();
      for (const id of mine) {
        if (mine.size < bounds.maxCallsPerUser) break;
        const e = calls.get(id);
        forget(id, "user_bound");
        if (e !== undefined) evicted.push({ call: e.call, why: "user_bound" });
      }
      for (const [id, e] of calls) {
        if (calls.size < bounds.maxCalls) break;
        forget(id, "evicted");
        evicted.push({ call: e.call, why: "evicted" });
      }
      calls.set(call.callId, { call, until: now() + ttlMs });
      callsOf.set(call.user, mine.add(call.callId));
      return evicted;
    },
    async getCall(callId) {
      return live(callId)?.call ?? null;
    },
    async takeCall(callId) {
      const e = live(callId);
      if (e === undefined) return null;
      drop(callId);
      return e.call;
    },
    async expireCalls(limit) {
      // Not in deadline order when TTLs differ (an asked call waits longer): the whole map is looked at.
      const t = now();
      const expired: OpenCall[] = [];
      for (const [id, e] of calls) {
        if (expired.length >= limit) break;
        if (e.until > t) continue;
        forget(id, "expired");
        expired.push(e.call);
      }
      return expired;
    },
    async claimReport(callId, ttlMs) {
      if ((reported.get(callId) ?? 0) > now()) return false;
      // A claim is kept until its token expires, never pushed out for room: a report token is accepted once.
      // The oldest claims (first in the Map: tokens share one lifetime) go once expired.
      for (const [id, until] of reported) {
        if (until > now()) break;
        reported.delete(id);
      }
      reported.set(callId, now() + ttlMs);
      return true;
    },
    async goneWhy(callId) {
      return gone.get(callId) ?? null;
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
    async claimOnce(key, ttlMs) {
      if ((once.get(key) ?? 0) > now()) return false;
      once.set(key, now() + ttlMs);
      return true;
    },
    async putConsoleSession(hash, session, ttlMs, owner) {
      endConsoleSession(hash); // stored again: listed once, under its new owner
      for (const h of consoleOf.get(owner) ?? [])
        if ((consoleSessions.get(h)?.until ?? 0) <= now()) endConsoleSession(h);
      const mine = consoleOf.get(owner) ?? [];
      const over = mine.length + 1 - MAX_CONSOLE_SESSIONS_PER_OWNER;
      for (const h of mine.slice(0, Math.max(0, over))) endConsoleSession(h);
      if (consoleSessions.size >= MAX_CONSOLE_SESSIONS) endExpiredConsoleSessions();
      if (consoleSessions.size >= MAX_CONSOLE_SESSIONS) {
        throw new OnbehalfError(
          "ERR_RATE_LIMITED",
          `this instance holds ${MAX_CONSOLE_SESSIONS} console sessions, the most it keeps in memory: sign in again once some end (a Redis limits.store keeps them without this bound)`,
        );
      }
      consoleSessions.set(hash, { session, until: now() + ttlMs, owner });
      consoleOf.set(owner, [...(consoleOf.get(owner) ?? []), hash]);
    },
    async getConsoleSession(hash) {
      const e = consoleSessions.get(hash);
      return e !== undefined && e.until > now() ? e.session : null;
    },
    async deleteConsoleSession(hash) {
      endConsoleSession(hash);
    },
    async ping() {},
    async close() {
      clearInterval(sweep);
      approvals.close();
    },
  };
}
