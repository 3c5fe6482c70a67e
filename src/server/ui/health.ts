/**
 * The console's health page (`/ui/api/health`, admins only): decisions per minute by outcome and decision
 * latency p50/p99 over the last hour (this instance, since it started), the most denied tools and reasons among
 * the last day's denials, the audit log's size and last signed checkpoint, and whether the stores answer.
 */
import type { FastifyInstance } from "fastify";
import type { Verdict } from "../../decision.js";
import type { ServerContext } from "../context.js";
import { consolePage } from "./audit-query.js";
import type { ConsoleAuth } from "./sign-in.js";
import type { Counted, HealthAnswer, HealthMinute } from "./wire.js";

const MINUTES = 60;
/** Latency samples kept per minute (a uniform sample beyond that: reservoir sampling). */
const SAMPLES = 512;
/** Recent denials the top lists count: at most this many, of the last 24 hours. */
const RECENT_DENIALS = 1000;
const DENIALS_SINCE_MS = 24 * 3600_000;

interface Minute {
  start: number;
  allow: number;
  deny: number;
  ask: number;
  seen: number;
  latencies: number[];
}

/**
 * Decisions of this instance, per minute, for the last hour.
 *
 * @example
 * const stats = new DecisionStats(Date.now); stats.add("allow", 0.0002); stats.series();
 */
export class DecisionStats {
  private readonly minutes: Minute[] = [];

  constructor(private readonly now: () => number) {}

  /** Count one decision and its latency in seconds. */
  add(decision: Verdict, seconds: number): void {
    const m = this.current();
    m[decision]++;
    m.seen++;
    if (m.latencies.length < SAMPLES) m.latencies.push(seconds);
    else {
      const j = Math.floor(Math.random() * m.seen);
      if (j < SAMPLES) m.latencies[j] = seconds;
    }
  }

  /** One point per minute of the last hour, oldest first (minutes without decisions count zero). */
  series(): HealthMinute[] {
    const end = minuteOf(this.now());
    const byStart = new Map(this.minutes.map((m) => [m.start, m]));
    const out: HealthMinute[] = [];
    for (let t = end - (MINUTES - 1) * 60_000; t <= end; t += 60_000) {
      const m = byStart.get(t);
      const sorted = m === undefined ? [] : [...m.latencies].sort((a, b) => a - b);
      out.push({
        minute: new Date(t).toISOString(),
        allow: m?.allow ?? 0,
        deny: m?.deny ?? 0,
        ask: m?.ask ?? 0,
        p50_ms: quantile(sorted, 0.5),
        p99_ms: quantile(sorted, 0.99),
      });
    }
    return out;
  }

  private current(): Minute {
    const start = minuteOf(this.now());
    const last = this.minutes[this.minutes.length - 1];
    if (last !== undefined && last.start === start) return last;
    const m: Minute = { start, allow: 0, deny: 0, ask: 0, seen: 0, latencies: [] };
    this.minutes.push(m);
    while (this.minutes.length > 0 && this.minutes[0]!.start <= start - MINUTES * 60_000)
      this.minutes.shift();
    return m;
  }
}

export function consoleHealthRoutes(
  app: FastifyInstance,
  ctx: ServerContext,
  auth: ConsoleAuth,
  stats: DecisionStats,
): void {
  app.get("/ui/api/health", async (req, reply): Promise<HealthAnswer> => {
    await auth.require(req, { role: "admin" });
    const log = ctx.gov.auditLog;
    const [checkpoint, state, denials] = await Promise.all([
      ctx.gov.auditStore.latestCheckpoint(log.logId).catch(() => null),
      ctx.state.ping().then(
        () => null,
        (e: unknown) => (e as Error).message,
      ),
      consolePage(
        ctx.gov.auditStore,
        // The time bound keeps the read short however large the log and however rare its denials.
        { decision: "deny", since: new Date(ctx.gov.now() - DENIALS_SINCE_MS).toISOString() },
        { kind: "attempt" },
        RECENT_DENIALS,
      ).catch(() => null),
    ]);
    reply.header("cache-control", "no-store");
    return {
      series: stats.series(),
      top_denied_tools: top((denials?.records ?? []).map((r) => r.tool ?? "(none)")),
      top_denied_reasons: top((denials?.records ?? []).map((r) => r.reason_code)),
      audit: {
        log: log.logId,
        size: log.lastSeq,
        healthy: log.healthy,
        problem: log.problem,
        checkpoint:
          checkpoint === null
            ? null
            : { size: checkpoint.size, time: checkpoint.time, note: checkpoint.note },
      },
      state: { healthy: state === null, problem: state },
    };
  });
}

function top(values: readonly string[], n = 5): Counted[] {
  const counts = new Map<string, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return [...counts]
    .map(([name, count]) => ({ name, count }))
    .sort((a, b) => b.count - a.count || a.name.localeCompare(b.name))
    .slice(0, n);
}

function minuteOf(ms: number): number {
  return Math.floor(ms / 60_000) * 60_000;
}

function quantile(sorted: readonly number[], q: number): number | null {
  if (sorted.length === 0) return null;
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! * 1e6) / 1e3;
}
