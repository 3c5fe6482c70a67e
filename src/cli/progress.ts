/**
 * Progress of a long audit pass (verify, export), drawn with cli-progress on a terminal; nothing at all when
 * the stream is not a TTY (a pipe, a file, a test), so output stays clean for scripts.
 */
import { SingleBar } from "cli-progress";
import type { OnProgress } from "../audit/progress.js";
import type { Terminal } from "./args.js";

/**
 * Run `work`, handing it a progress callback that draws a bar on `terminal` when it is a TTY (else
 * undefined: the work need not count). The bar ends at its total and is cleared, whatever `work` does.
 *
 * @example
 * const report = await withProgress(process.stderr, "verifying", (onProgress) => verifyAudit(store, { keys, onProgress }));
 */
export async function withProgress<T>(
  terminal: Terminal | undefined,
  label: string,
  work: (onProgress: OnProgress | undefined) => Promise<T>,
): Promise<T> {
  if (terminal?.isTTY !== true) return work(undefined);
  const bar = new SingleBar({
    stream: terminal as NodeJS.WritableStream,
    format: `${label} [{bar}] {percentage}% {value}/{total} records`,
    barsize: 30,
    // Nothing the terminal would keep if Ctrl-C stops the pass: the cursor stays shown, wrapping on.
    hideCursor: false,
    linewrap: true,
    clearOnComplete: true,
  });
  let started = false;
  try {
    return await work((done, total) => {
      const size = Math.max(done, total);
      if (!started) {
        bar.start(size, done);
        started = true;
        return;
      }
      bar.setTotal(size);
      bar.update(done);
    });
  } finally {
    if (started) bar.stop();
  }
}
