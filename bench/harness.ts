/**
 * A small, honest micro-benchmark harness: time each call with `process.hrtime.bigint()`, after a warm-up,
 * and report medians and tails. Every figure in `npm run bench` is compared with a baseline measured in the
 * same process, so the ratio survives this noisy 2-core machine better than an absolute number does.
 */

export interface Stats {
  readonly name: string;
  readonly n: number;
  /** Microseconds. */
  readonly p50: number;
  readonly p99: number;
  readonly mean: number;
}

/** Time `fn` `n` times (after `warmup` untimed calls); `fn` may be sync or async. */
export async function sample(
  name: string,
  fn: (i: number) => unknown,
  n: number,
  warmup = Math.min(n, 2000),
): Promise<Stats> {
  for (let i = 0; i < warmup; i++) await fn(i);
  const times = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    const r = fn(i);
    if (r instanceof Promise) await r;
    times[i] = Number(process.hrtime.bigint() - t0);
  }
  return summarize(name, times);
}

/**
 * Time `n` awaited calls of `fn` in a tight loop that never yields to the event loop on its own, as a batch
 * job or a loop over a cached tool does. The audit writer gets its turns only when the governed call itself
 * waits for it (back-pressure); that wait is inside the timed calls, where an application would pay it.
 */
export async function timed(name: string, n: number, fn: (i: number) => Promise<unknown>): Promise<Stats> {
  const times = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await fn(i);
    times[i] = Number(process.hrtime.bigint() - t0);
  }
  return summarize(name, times);
}

export function summarize(name: string, nanos: Float64Array): Stats {
  const sorted = nanos.slice().sort();
  const at = (q: number) => (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0) / 1000;
  let sum = 0;
  for (const t of sorted) sum += t;
  return { name, n: sorted.length, p50: at(0.5), p99: at(0.99), mean: sum / sorted.length / 1000 };
}

/** Median of several repeated measurements of the same thing (damps scheduler noise). */
export function medianOf(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? Number.NaN;
}

export function fmt(us: number): string {
  return us < 10 ? us.toFixed(2) : us < 1000 ? us.toFixed(1) : us.toFixed(0);
}

/** One line of the report: a measured figure, its target, and whether it was met. */
export interface Finding {
  readonly what: string;
  readonly measured: string;
  readonly target: string;
  readonly ok: boolean;
}

export function printFindings(title: string, findings: readonly Finding[]): void {
  console.log(`\n## ${title}`);
  for (const f of findings) {
    console.log(`${f.ok ? "PASS" : "MISS"}  ${f.what}: ${f.measured}  (target ${f.target})`);
  }
}
