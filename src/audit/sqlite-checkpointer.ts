/**
 * The WAL checkpointer of a SQLite audit store (sqlite.ts): a worker thread with a connection of its own that
 * copies the write-ahead log into the database every `everyMs` (`PRAGMA wal_checkpoint(PASSIVE)`, which never
 * waits for or blocks a writer). Left to the connection that commits, a checkpoint runs inside a commit — up to
 * 16 MB copied and synced, 10–30 ms on a shared disk — and every request waiting for that commit waits with it.
 * `close` ends it.
 */
import { parentPort, workerData } from "node:worker_threads";
import Database from "better-sqlite3";

const { path, everyMs } = workerData as { path: string; everyMs: number };
const db = new Database(path);
db.pragma("busy_timeout = 0");
const timer = setInterval(() => {
  try {
    db.pragma("wal_checkpoint(PASSIVE)");
  } catch {
    // busy or briefly unavailable: the next turn tries again (the writer's own checkpoints go on regardless)
  }
}, everyMs);
parentPort!.on("message", (message: unknown) => {
  if (message !== "close") return;
  clearInterval(timer);
  db.close();
  parentPort!.close();
});
