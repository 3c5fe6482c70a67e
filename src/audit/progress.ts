/**
 * How far a pass over the audit (verify, export) has come, for a progress bar: records read of the records
 * the logs' heads promise. Reported once per page read, so it costs nothing per record.
 */
import type { AuditStore } from "./store.js";

/** Called with the records read so far and the records to read in all. */
export type OnProgress = (done: number, total: number) => void;

export interface RecordCounter {
  /** `n` more records were read. */
  read(n: number): void;
  /** The pass is over: report it complete (a log cut short by a finding is done too). */
  end(): void;
}

const SILENT: RecordCounter = { read: () => {}, end: () => {} };

/**
 * A counter over `logs` reporting to `onProgress`, or one that does nothing without it (and reads no heads).
 *
 * @example
 * const counter = await recordCounter(store, await store.logs(), (done, total) => console.error(done, total));
 */
export async function recordCounter(
  store: AuditStore,
  logs: readonly string[],
  onProgress: OnProgress | undefined,
): Promise<RecordCounter> {
  if (onProgress === undefined) return SILENT;
  let total = 0;
  for (const log of logs) total += (await store.head(log))?.seq ?? 0;
  let done = 0;
  onProgress(0, total);
  return {
    read(n) {
      done += n;
      onProgress(done, Math.max(done, total));
    },
    end() {
      onProgress(Math.max(done, total), Math.max(done, total));
    },
  };
}
