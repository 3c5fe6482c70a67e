/**
 * In-process rate limits: one Map of sliding-window counters. The default; for several instances use the
 * Redis store so a human's budget is shared across them.
 */
import type { Bucket } from "../decision.js";
import { fits, type RateLimiter, roll, WINDOW_MS, type WindowState } from "./window.js";

/**
 * Create the in-memory limiter.
 *
 * @example
 * const limiter = createMemoryLimiter();
 * limiter.take([{ key: "acme\0alice\0interactive\0*", limit: 60, source: "defaults.interactive" }], Date.now());
 */
export function createMemoryLimiter(): RateLimiter & { size(): number } {
  const windows = new Map<string, WindowState>();
  let lastSweep = 0;

  /** Drop buckets idle for two windows: their counts can no longer matter. */
  const sweep = (now: number) => {
    lastSweep = now;
    for (const [key, state] of windows) if (now - state.start >= 2 * WINDOW_MS) windows.delete(key);
  };

  return {
    take(buckets: readonly Bucket[], now: number): Bucket | null {
      if (now - lastSweep > WINDOW_MS) sweep(now);
      const states: WindowState[] = [];
      for (const bucket of buckets) {
        let state = windows.get(bucket.key);
        if (state === undefined) {
          state = { start: now - (now % WINDOW_MS), current: 0, previous: 0 };
          windows.set(bucket.key, state);
        } else {
          roll(state, now);
        }
        if (!fits(state, now, bucket.limit)) return bucket;
        states.push(state);
      }
      for (const state of states) state.current++;
      return null;
    },
    size: () => windows.size,
    close() {
      windows.clear();
    },
  };
}
