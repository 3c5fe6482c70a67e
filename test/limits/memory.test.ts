import { describe, expect, it } from "vitest";
import type { Bucket } from "../../src/decision.js";
import { createMemoryLimiter } from "../../src/limits/memory.js";
import { estimate, roll, WINDOW_MS, type WindowState } from "../../src/limits/window.js";

const perHuman: Bucket = { key: "acme\0alice\0interactive\0*", limit: 60, source: "defaults.interactive" };
const perTool: Bucket = { key: "acme\0alice\0interactive\0refund", limit: 3, source: "tools.refund.*" };
const T0 = 1_800_000_000_000 - (1_800_000_000_000 % WINDOW_MS);

describe("in-memory sliding-window limiter", () => {
  it("lets exactly the limit through in a minute, then names the full bucket", () => {
    const limiter = createMemoryLimiter();
    let allowed = 0;
    for (let i = 0; i < 100; i++) if (limiter.take([perHuman], T0 + i * 100) === null) allowed++;
    expect(allowed).toBe(60);
    expect(limiter.take([perHuman], T0 + 10_000)).toBe(perHuman);
  });

  it("is all-or-nothing across a call's buckets", () => {
    const limiter = createMemoryLimiter();
    for (let i = 0; i < 3; i++) expect(limiter.take([perHuman, perTool], T0 + i)).toBeNull();
    // the tool bucket is full; the human bucket must not be charged for the refused calls
    for (let i = 0; i < 10; i++) expect(limiter.take([perHuman, perTool], T0 + 10 + i)).toBe(perTool);
    let rest = 0;
    for (let i = 0; i < 100; i++) if (limiter.take([perHuman], T0 + 100 + i) === null) rest++;
    expect(rest).toBe(57);
  });

  it("slides: the previous minute's calls weigh less as it recedes", () => {
    const limiter = createMemoryLimiter();
    for (let i = 0; i < 60; i++) limiter.take([perHuman], T0 + 50_000 + i);
    // 1 s into the next minute, 59 of the previous 60 still count: one more fits, then none
    expect(limiter.take([perHuman], T0 + WINDOW_MS + 1_000)).toBeNull();
    expect(limiter.take([perHuman], T0 + WINDOW_MS + 1_001)).toBe(perHuman);
    // half-way, half of the previous minute counts (30) plus the one taken: 29 more fit
    let allowed = 0;
    for (let i = 0; i < 60; i++)
      if (limiter.take([perHuman], T0 + WINDOW_MS + 30_000 + i) === null) allowed++;
    expect(allowed).toBe(29);
    let later = 0;
    for (let i = 0; i < 100; i++) if (limiter.take([perHuman], T0 + 3 * WINDOW_MS + i) === null) later++;
    expect(later).toBe(60);
  });

  it("estimates with both windows and forgets a window two minutes old", () => {
    const s: WindowState = { start: T0, current: 40, previous: 0 };
    roll(s, T0 + WINDOW_MS + WINDOW_MS / 4);
    expect(s).toEqual({ start: T0 + WINDOW_MS, current: 0, previous: 40 });
    expect(estimate(s, T0 + WINDOW_MS + WINDOW_MS / 4)).toBe(30);
    roll(s, T0 + 3 * WINDOW_MS);
    expect(s.previous).toBe(0);
  });

  it("drops idle buckets so memory stays bounded", () => {
    const limiter = createMemoryLimiter();
    for (let i = 0; i < 1000; i++) limiter.take([{ key: `k${i}`, limit: 5, source: "x" }], T0);
    expect(limiter.size()).toBe(1000);
    limiter.take([perHuman], T0 + 3 * WINDOW_MS);
    expect(limiter.size()).toBe(1);
  });
});
