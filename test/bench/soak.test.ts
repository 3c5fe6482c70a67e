/**
 * The soak of issue 22 in a shortened form (bench/soak.ts; `npm run bench -- soak` runs 10 minutes of each):
 * `/v1/check` at capacity for 40 s with no reports and 40 s with every result reported, the bounds scaled down
 * (5,000 calls waiting, 10 s) so that eviction at the bound and expiry both happen within the run. Asserted on
 * the trend, not on speed: after the warm-up (at least 10 s, and on until RSS first drops, at most half the
 * run: V8 sizes its heap and runs its first major GC; comparing before that measures the first climb of GC's
 * sawtooth, not a leak: a 20 s run with reports once measured 1.0 KB per check that way) RSS stays within 2× its
 * warm value, the last third's median RSS within 1.5× the first third's, the heap in use after a full collection
 * (what the control plane keeps; RSS moves by megabytes with GC's sawtooth and the heap V8 reserves) grows by at
 * most 0.04 KB per check answered (its least-squares slope), and the last third's median throughput is at least
 * 0.6× the first third's. A control plane that keeps every unreported call (as before issue 22; measured with the
 * bounds lifted: ~0.1 KB of collected heap a check) fails the growth per check; the throughput margin is wide
 * because this machine is shared.
 */
import { describe, expect, it } from "vitest";
import {
  judge,
  KB_PER_CHECK_MAX,
  RSS_BOUND,
  RSS_TREND_MAX,
  type SoakResult,
  soak,
  THROUGHPUT_TREND_MIN,
} from "../../bench/soak.js";

const BOUNDS = { max_pending_calls: 5_000, pending_call_seconds: 10 };

function expectFlat(r: SoakResult): void {
  const figures = {
    warm: Math.round(r.warmRssMiB),
    max: Math.round(r.maxRssMiB),
    rssTrend: Number(r.rssTrend.toFixed(2)),
    throughputTrend: Number(r.throughputTrend.toFixed(2)),
    kbPerCheck: Number(r.kbPerCheck.toFixed(3)),
    errors: r.errors,
  };
  expect(r.checks, JSON.stringify(figures)).toBeGreaterThan(0);
  expect(r.maxRssMiB, JSON.stringify(figures)).toBeLessThanOrEqual(RSS_BOUND * r.warmRssMiB);
  expect(r.rssTrend, JSON.stringify(figures)).toBeLessThanOrEqual(RSS_TREND_MAX);
  expect(r.kbPerCheck, JSON.stringify(figures)).toBeLessThanOrEqual(KB_PER_CHECK_MAX);
  expect(r.throughputTrend, JSON.stringify(figures)).toBeGreaterThanOrEqual(THROUGHPUT_TREND_MIN);
  expect(r.errors, JSON.stringify(figures)).toBe(0);
}

/**
 * Samples every 2 s at 2,500 checks/s: RSS a GC sawtooth between 300 and 340 MiB that also climbs 8 MiB over
 * the run (V8 reserving heap: the shape CI's runs had), the collected heap 80 MiB ± 1, plus `leakKb` per check
 * in both.
 */
function samples(leakKb: number) {
  return Array.from({ length: 20 }, (_, i) => {
    const t = 2 * (i + 1);
    const phase = [0, 15, 30, 40, 5, 25][i % 6] ?? 0;
    const leaked = (leakKb * 2_500 * t) / 1024;
    return {
      t,
      rssMiB: 300 + phase + (8 * t) / 40 + leaked,
      heapMiB: 80 + (i % 2) + leaked,
      checksPerSecond: 2_500,
    };
  });
}

describe("the soak's verdict", () => {
  it("passes RSS's sawtooth and climb when the collected heap stays flat", () => {
    const r = judge(samples(0), 10, 100_000, 0, true);
    expect(r.kbPerCheck).toBeLessThanOrEqual(0.05);
    expect(r.flat).toBe(true);
  });

  it("fails the same run with the collected heap growing as the leak before issue 22 grew it (0.1 KB a check)", () => {
    const r = judge(samples(0.1), 10, 100_000, 0, true);
    expect(r.kbPerCheck).toBeGreaterThan(2 * KB_PER_CHECK_MAX);
    expect(r.flat).toBe(false);
  });
});

describe("soak, shortened", () => {
  it("keeps memory and throughput flat under /v1/check at capacity with no reports", async () => {
    expectFlat(
      await soak({
        seconds: 40,
        warmupSeconds: 10,
        settle: true,
        reports: false,
        server: BOUNDS,
        sampleSeconds: 2,
      }),
    );
  }, 90_000);

  it("keeps memory and throughput flat with every result reported", async () => {
    expectFlat(
      await soak({
        seconds: 40,
        warmupSeconds: 10,
        settle: true,
        reports: true,
        server: BOUNDS,
        sampleSeconds: 2,
      }),
    );
  }, 90_000);
});
