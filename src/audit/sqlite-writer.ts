/**
 * The worker thread of `audit.writer_thread` (sqlite-thread.ts): it opens the store's file and commits what it
 * is sent (`appendRows`: rows made by `auditRowOf`; `putCheckpoint`) with the SQLite store's own code, answering each message with its value or
 * its error as plain data. `close` closes the database and ends the thread.
 */
import { parentPort, workerData } from "node:worker_threads";
import { OnbehalfError } from "../errors.js";
import { openSqliteStore } from "./sqlite.js";

const store = openSqliteStore((workerData as { path: string }).path);
const port = parentPort!;

port.on("message", async (message: { id: number; method: string; args: unknown[] }) => {
  if (message.method === "close") {
    await store.close();
    port.close();
    return;
  }
  try {
    const value = await (store as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[
      message.method
    ]!(...message.args);
    port.postMessage({ id: message.id, value });
  } catch (e) {
    const error =
      e instanceof OnbehalfError
        ? { code: e.code, message: e.message, details: e.details }
        : {
            code: "ERR_AUDIT_UNAVAILABLE",
            message: (e as Error).message,
            details: { failure: "unavailable" },
          };
    port.postMessage({ id: message.id, error });
  }
});
