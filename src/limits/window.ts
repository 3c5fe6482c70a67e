/**
 * The sliding-window counter: a per-minute limit without storing a timestamp per call. Two fixed windows
 * aligned on the epoch minute are kept per bucket; the count "in the last 60 s" is estimated as the previous
 * window's count weighted by how much of it still overlaps, plus the current window's count. Memory per
 * bucket is constant, the same arithmetic runs in memory and in Redis, and the error against an exact
 * sliding log is small (it assumes the previous window's calls were spread evenly).
 */
import type { Bucket } from "../decision.js";

export const WINDOW_MS = 60_000;

/** The counts of one bucket. */
export interface WindowState {
  /** Start of the current window, ms since the epoch, a multiple of WINDOW_MS. */
  start: number;
  current: number;
  previous: number;
}

/** Move `state` forward to the window containing `now`. */
export function roll(state: WindowState, now: number): void {
  const start = now - (now % WINDOW_MS);
  if (start === state.start) return;
  state.previous = start - state.start === WINDOW_MS ? state.current : 0;
  state.current = 0;
  state.start = start;
}

/** Estimated calls in the sliding minute ending at `now` (state already rolled). */
export function estimate(state: WindowState, now: number): number {
  const overlap = (WINDOW_MS - (now - state.start)) / WINDOW_MS;
  return state.previous * overlap + state.current;
}

/** Whether one more call fits under `limit`. */
export function fits(state: WindowState, now: number, limit: number): boolean {
  return estimate(state, now) + 1 <= limit;
}

/** A rate limiter: all-or-nothing over a call's buckets. */
export interface RateLimiter {
  /**
   * If every bucket has room, count the call in each and return null; otherwise count nothing and return
   * the first bucket that is full. Throws `ERR_LIMITS_UNAVAILABLE` when its store cannot answer.
   */
  take(buckets: readonly Bucket[], now: number): Bucket | null | Promise<Bucket | null>;
  close(): void | Promise<void>;
}
