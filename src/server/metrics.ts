/**
 * The control plane's Prometheus metrics, kept by prom-client in a registry of their own (one per server, so
 * several servers in one process, or an application's own metrics, never mix). Every label comes from a small,
 * fixed set (a decision, a reason code, a route template, a status class, a configured upstream name): nothing a
 * caller sends becomes a label. docs/observability.md lists every metric, and a test keeps that list exact.
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";

type Labels<N extends string> = Partial<Record<N, string>>;

/** Latency buckets in seconds: a decision takes microseconds to milliseconds; HTTP and upstreams longer. */
const FAST_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1];
const SLOW_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export class Metrics {
  readonly registry = new Registry();

  /** A counter; returns the function that adds to it. */
  counter<N extends string>(
    name: string,
    help: string,
    labelNames: readonly N[] = [],
  ): (labels?: Labels<N>, by?: number) => void {
    const c = new Counter({ name, help, labelNames, registers: [this.registry] });
    return (labels = {}, by = 1) => c.inc(labels, by);
  }

  /**
   * A counter whose value something else keeps (a total that only grows, read when scraped). A reading below the
   * last one (a counter reset) starts counting again from there, as a Prometheus counter does.
   */
  counterOf(name: string, help: string, read: () => number): void {
    let last = 0;
    new Counter({
      name,
      help,
      registers: [this.registry],
      collect() {
        const now = read();
        if (now < last) {
          this.reset();
          last = 0;
        }
        this.inc(now - last);
        last = now;
      },
    });
  }

  /** A gauge read when scraped. */
  gauge(name: string, help: string, read: () => number): void {
    new Gauge({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.set(read());
      },
    });
  }

  /** A histogram of durations in seconds; returns the function that observes one. */
  histogram<N extends string>(
    name: string,
    help: string,
    labelNames: readonly N[],
    speed: "fast" | "slow" = "slow",
  ): (labels: Labels<N>, seconds: number) => void {
    const h = new Histogram({
      name,
      help,
      labelNames,
      buckets: speed === "fast" ? FAST_BUCKETS : SLOW_BUCKETS,
      registers: [this.registry],
    });
    return (labels, seconds) => h.observe(labels, seconds);
  }

  /** The names of every metric exposed (docs and tests compare them). */
  names(): string[] {
    return this.registry.getMetricsAsArray().map((m) => m.name);
  }

  /** The content type of {@link Metrics.render}. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text. */
  render(): Promise<string> {
    return this.registry.metrics();
  }
}

/** `2xx`, `4xx`…: the class of an HTTP status, a label with five values. */
export function statusClass(status: number): string {
  return status >= 100 && status < 600 ? `${Math.floor(status / 100)}xx` : "other";
}

/** Seconds since a `process.hrtime.bigint()` reading. */
export function secondsSince(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}
