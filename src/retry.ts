/**
 * Waiting for a store at start: PostgreSQL, Redis or SQLite may still be starting (a container next to this
 * one, a peer instance creating the schema). A bounded wait with backoff, then one clear error that names the
 * store and its address (without its password).
 *
 * Like errors.ts, this module imports nothing from the project but the errors: every concern may import it.
 */
import { type ErrorCode, OnbehalfError } from "./errors.js";

export interface WaitOptions {
  /** Give up after this long (ms). */
  readonly timeoutMs: number;
  /** Told each failed attempt, with the time left (ms), e.g. to print "waiting for …". */
  readonly onRetry?: (error: unknown, leftMs: number) => void;
  /** The code of the error thrown when the time is up. */
  readonly code: ErrorCode;
}

/**
 * Run `attempt` until it succeeds or `timeoutMs` has passed (backoff from 100 ms to 2 s between attempts).
 *
 * @example
 * await waitFor("the audit store (PostgreSQL at postgres://db/audit)", () => store.init(),
 *   { timeoutMs: 30_000, code: "ERR_AUDIT_UNAVAILABLE" });
 */
export async function waitFor<T>(what: string, attempt: () => Promise<T>, options: WaitOptions): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  for (let n = 0; ; n++) {
    try {
      return await attempt();
    } catch (e) {
      // A refusal (another writer holds the log, a bad config) is final; a store that is away is waited for.
      if (e instanceof OnbehalfError && !RETRYABLE.has(e.code)) throw e;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new OnbehalfError(
          options.code,
          `${what} did not answer within ${Math.round(options.timeoutMs / 1000)} s: ${(e as Error).message}`,
          { cause: e },
        );
      }
      options.onRetry?.(e, left);
      await new Promise((r) => setTimeout(r, Math.min(left, 100 * 2 ** Math.min(n, 4))));
    }
  }
}

const RETRYABLE = new Set<ErrorCode>(["ERR_AUDIT_UNAVAILABLE", "ERR_LIMITS_UNAVAILABLE"]);

/**
 * A store URL fit for messages: the password replaced by `***`.
 *
 * @example
 * redactUrl("postgres://app:s3cret@db:5432/audit"); // "postgres://app:***@db:5432/audit"
 */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== "") u.password = "***";
    return u.toString();
  } catch {
    return url.replace(/\/\/([^:@/]*):[^@/]*@/, "//$1:***@");
  }
}
