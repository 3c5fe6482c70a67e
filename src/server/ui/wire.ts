/**
 * The shapes of the console's API answers that the page reads field by field: declared once, here, for the
 * server that writes them and the page (console/src) that reads them.
 */

/** One minute of decisions on the health page. */
export interface HealthMinute {
  /** ISO time the minute starts. */
  readonly minute: string;
  readonly allow: number;
  readonly deny: number;
  readonly ask: number;
  /** Decision latency in milliseconds, null for a minute without decisions. */
  readonly p50_ms: number | null;
  readonly p99_ms: number | null;
}

/** A name and how often it occurs (top denied tools and reasons). */
export interface Counted {
  readonly name: string;
  readonly count: number;
}

/** `GET /ui/api/health`. */
export interface HealthAnswer {
  readonly series: readonly HealthMinute[];
  readonly top_denied_tools: readonly Counted[];
  readonly top_denied_reasons: readonly Counted[];
  readonly audit: {
    readonly log: string;
    readonly size: number;
    readonly healthy: boolean;
    readonly problem: string | null;
    readonly checkpoint: { readonly size: number; readonly time: string; readonly note: string } | null;
  };
  readonly state: { readonly healthy: boolean; readonly problem: string | null };
}
