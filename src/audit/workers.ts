/**
 * Starting the audit's worker threads (the SQLite writer of `audit.writer_thread`, the WAL checkpointer, the
 * page checkers of `audit verify`): from the build, the compiled file beside this one; from source (tests,
 * tsx), the TypeScript file, after the worker registers tsx's loader.
 */
import { Worker } from "node:worker_threads";

/**
 * A worker running `./<name>.js` (or `.ts` from source) with `workerData`.
 *
 * @example
 * const w = startAuditWorker("sqlite-checkpointer", { path: "./onbehalf.db" });
 */
export function startAuditWorker(name: string, workerData: unknown): Worker {
  const fromSource = import.meta.url.endsWith(".ts");
  const entry = new URL(`./${name}${fromSource ? ".ts" : ".js"}`, import.meta.url);
  return fromSource
    ? new Worker(
        `import("tsx/esm/api").then((tsx) => { tsx.register(); return import(${JSON.stringify(entry.href)}); });`,
        { eval: true, workerData },
      )
    : new Worker(entry, { workerData });
}
