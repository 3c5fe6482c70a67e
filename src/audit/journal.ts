/**
 * The writer's journal: a small file per log on the writer's own disk, beside the audit key, saying whether
 * the log's last writer here stopped cleanly and where. The store's claim rows say the same, but anyone who can
 * write to the database can write those: with a fake claim left behind, records added after a clean stop look
 * like the unsigned tail of a crash, which the next writer would check and sign. The journal is out of their
 * reach (it lives where the signing key does), so a clean stop it records cannot be turned into a crash.
 *
 * A journal names the last record it signed (its sequence number and leaf hash): a store whose record there
 * differs is not the store it describes (a fresh database, say) unless that store holds that many records, in
 * which case the record was rewritten.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { join } from "node:path";

/** What the journal says of one log. */
export type JournalEntry =
  | { readonly state: "open"; readonly log: string; readonly since: string }
  | {
      readonly state: "closed";
      readonly log: string;
      /** Records the final checkpoint signs. */
      readonly size: number;
      /** Leaf hash of record `size` (empty for an empty log). */
      readonly leaf: string;
      readonly at: string;
    };

/** The journal directory of an audit key file: `<key>.logs`. */
export function journalDir(keyPath: string): string {
  return `${keyPath}.logs`;
}

function fileOf(dir: string, log: string): string {
  return join(dir, `${encodeURIComponent(log)}.json`);
}

/** The journal's entry for `log`, or null when there is none (or it cannot be read as one). */
export function readJournal(dir: string, log: string): JournalEntry | null {
  let text: string;
  try {
    text = readFileSync(fileOf(dir, log), "utf8");
  } catch {
    return null;
  }
  try {
    const e = JSON.parse(text) as Partial<JournalEntry> & { size?: unknown; leaf?: unknown };
    if (e.log !== log) return null;
    if (e.state === "open") return e as JournalEntry;
    if (e.state === "closed" && Number.isSafeInteger(e.size) && typeof e.leaf === "string")
      return e as JournalEntry;
  } catch {}
  return null;
}

/** Write `entry` durably (written to a temporary file, synced, then renamed over the old one). */
export function writeJournal(dir: string, entry: JournalEntry): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = fileOf(dir, entry.log);
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, "w", 0o600);
  try {
    writeSync(fd, `${JSON.stringify(entry)}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}
