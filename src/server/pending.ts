/**
 * The bounds of what the control plane keeps between requests: calls waiting for their result go when their
 * time runs out (`server.pending_call_seconds`) or, at the bound (`server.max_pending_calls`, and its user's:
 * `server.max_pending_calls_per_user`), oldest first. A
 * call that goes unreported is never lost: its outcome is audited as `expired`, and a metric counts it.
 */
import type { Governor } from "../govern/governor.js";
import type { Metrics } from "./metrics.js";
import type { EvictedCall, GoneReason, OpenCall, StateStore } from "./state.js";

/** How many expired calls one sweep takes from the store at a time. */
const SWEEP_BATCH = 1_000;

export interface PendingBounds {
  /** How long an allowed call may take to report its result. */
  readonly ttlMs: number;
  /** How many calls may wait for their result at once. */
  readonly maxCalls: number;
  /** How many calls of one user may wait at once. */
  readonly maxCallsPerUser: number;
}

export interface PendingCalls {
  /** Audit the outcome of calls that went unreported (evicted at the bound, or past their time) as `expired`. */
  expired(calls: readonly OpenCall[], why: GoneReason): void;
  /** Audit the calls a new one pushed out (`putCall`'s answer) as `expired`, each with its bound. */
  evictedCalls(gone: readonly EvictedCall[]): void;
  /** Why a late report finds nothing: the message of its 404. */
  notWaiting(callId: string): Promise<string>;
  /** Count what else was let go before it was done with (MCP sessions: idle, bound, user_bound). */
  evicted(what: "mcp_session", why: "idle" | "bound" | "user_bound"): void;
  /** Take the calls past their time from the store and audit them; resolves to how many. */
  sweep(): Promise<number>;
  close(): void;
}

/**
 * Audit and count what goes unreported, and sweep the calls past their time every `sweepMs`.
 *
 * @example
 * const pending = pendingCalls(gov, state, metrics, { ttlMs: 300_000, maxCalls: 50_000 });
 */
export function pendingCalls(
  gov: Governor,
  state: StateStore,
  metrics: Metrics,
  bounds: PendingBounds,
  sweepMs = 1_000,
): PendingCalls {
  const evictions = metrics.counter(
    "onbehalf_state_evictions_total",
    "What the control plane stopped keeping before it was done with it: calls waiting for their result " +
      "(why: expired, bound) and MCP sessions (why: idle, bound, user_bound).",
    ["what", "why"],
  );
  const seconds = Math.round(bounds.ttlMs / 1000);
  const reasonOf = (why: GoneReason) =>
    why === "expired"
      ? `expired: no result was reported within ${seconds} s (server.pending_call_seconds)`
      : why === "user_bound"
        ? `expired: evicted unreported, its user had ${bounds.maxCallsPerUser} calls waiting for their result (server.max_pending_calls_per_user)`
        : `expired: evicted unreported, ${bounds.maxCalls} calls were waiting for their result (server.max_pending_calls)`;
  const metricWhy = { expired: "expired", evicted: "bound", user_bound: "user_bound" } as const;
  const expired = (calls: readonly OpenCall[], why: GoneReason) => {
    if (calls.length === 0) return;
    evictions({ what: "pending_call", why: metricWhy[why] }, calls.length);
    const reason = reasonOf(why);
    for (const call of calls) {
      try {
        const f = call.fields;
        gov.recordEvent({
          ...f,
          kind: "outcome",
          reason,
          outcome: "expired",
          latency_us: Math.max(0, (gov.now() - call.startedAt) * 1000),
          source: f.source,
        });
      } catch {
        // the audit refusing a record (closed, down) is its own alarm; the call is gone either way
      }
    }
  };
  let sweeping: Promise<number> | null = null;
  const sweep = () => {
    sweeping ??= (async () => {
      let total = 0;
      try {
        for (;;) {
          const calls = await state.expireCalls(SWEEP_BATCH);
          expired(calls, "expired");
          total += calls.length;
          if (calls.length < SWEEP_BATCH) break;
        }
      } catch {
        // the store is down: the next sweep tries again (Redis keeps the values past their deadline for it)
      } finally {
        sweeping = null;
      }
      return total;
    })();
    return sweeping;
  };
  const timer = setInterval(() => void sweep(), sweepMs);
  timer.unref();
  return {
    expired,
    evictedCalls(gone) {
      for (const why of ["user_bound", "evicted"] as const) {
        expired(
          gone.filter((g) => g.why === why).map((g) => g.call),
          why,
        );
      }
    },
    sweep,
    evicted(what, why) {
      evictions({ what, why });
    },
    async notWaiting(callId) {
      const why = await state.goneWhy(callId).catch(() => null);
      if (why === "expired")
        return `call ${callId} no longer waits for a result: none came within ${seconds} s (server.pending_call_seconds); its outcome is audited as expired`;
      if (why === "evicted")
        return `call ${callId} no longer waits for a result: it was evicted unreported when more than ${bounds.maxCalls} calls were waiting (server.max_pending_calls); its outcome is audited as expired`;
      if (why === "user_bound")
        return `call ${callId} no longer waits for a result: it was evicted unreported when its user had more than ${bounds.maxCallsPerUser} calls waiting (server.max_pending_calls_per_user); its outcome is audited as expired`;
      return `no call ${callId} is waiting for a result (unknown, checked with "report": false, expired or already reported)`;
    },
    close() {
      clearInterval(timer);
    },
  };
}
