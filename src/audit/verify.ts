/**
 * `audit verify`: re-derive every log from its stored records and hold it against its signed checkpoints.
 * Reports the first problem of each log with its sequence number and what is wrong:
 *
 * - `deleted`: a sequence number is missing, a record does not link to the one before it, or a signed
 *   checkpoint covers more records than are left;
 * - `reordered`: a row holds the record of another sequence number;
 * - `edited`: a record's bytes do not match its leaf hash, an indexed column disagrees with the record, or
 *   the records up to a checkpoint were rewritten (their hashes recomputed) so the signed root no longer fits;
 * - `forged_checkpoint`: a checkpoint's signature does not verify with the log's key, or its stored root
 *   differs from the root it signs;
 * - `unverified`: nothing was found wrong, but nothing proves the records either: no checkpoint signed by a
 *   trusted key covers them, or too many records follow the last one that does. A log rewritten from scratch
 *   with its checkpoints deleted looks exactly like this, so it is a failure, not a pass.
 *
 * Checkpoints kept outside the database (`external`: signed notes saved from `GET /v1/audit/checkpoint` or a
 * witness) are held against the records like stored ones, so a database rewritten whole cannot pass.
 */
import { availableParallelism } from "node:os";
import { OnbehalfError } from "../errors.js";
import { parseCheckpoint, type TrustedKey, verifyCheckpoint } from "./checkpoint.js";
import { readJournal } from "./journal.js";
import { CompactRange } from "./merkle.js";
import { type OnProgress, type RecordCounter, recordCounter } from "./progress.js";
import { GENESIS_HASH } from "./record.js";
import type { AuditStore, LogHolder, StoredCheckpoint } from "./store.js";
import { type PageCheckers, pageCheckers, pagesOf } from "./verify-pages.js";
import type { Finding, Problem } from "./verify-rows.js";

export type { Finding, Problem } from "./verify-rows.js";

export interface LogReport {
  readonly log: string;
  readonly records: number;
  readonly checkpoints: number;
  /** Checkpoints whose signature and root were verified (stored and external). */
  readonly verifiedCheckpoints: number;
  /** The size of the last verified checkpoint: the records up to it are proven. */
  readonly verifiedSize: number;
  /** Hex root of the tree over all records read. */
  readonly root: string;
  readonly finding: Finding | null;
}

export interface VerifyReport {
  readonly ok: boolean;
  readonly logs: readonly LogReport[];
}

export interface VerifyOptions {
  /**
   * The keys whose signatures prove checkpoints: published verifier keys (bound to a name), or the audit key's
   * public key (any name it signed as). A log none of them signed is `unverified`.
   */
  readonly keys: readonly TrustedKey[];
  /** Only these logs (default: every log in the store). */
  readonly logs?: readonly string[];
  /**
   * How many records may follow a log's last verified checkpoint while a writer holds the log (it signs them
   * soon: a batch commits just before its checkpoint is signed) before it is `unverified`. Default 0; the CLI
   * allows `checkpoint_every + batch_size`. A log no writer holds was stopped cleanly, which signs everything:
   * any record after its last checkpoint is `unverified`, as is a log with no verified checkpoint at all.
   */
  readonly unsignedTail?: number;
  /** Accept records no checkpoint covers, whatever their number (`--allow-unsigned-tail`). */
  readonly acceptUnsigned?: boolean;
  /**
   * The writers' journal directory of this host (see journal.ts): a log its journal says stopped cleanly at
   * its last verified checkpoint has no writer, whatever claim rows the store holds.
   */
  readonly journal?: string;
  /** A writer that has not renewed its claim for this long is not running (default 20 s, as for takeover). */
  readonly staleMs?: number;
  /** Signed checkpoints kept outside the store, each held against the log its origin names. */
  readonly external?: readonly string[];
  /** Records read (and checked) at a time, default 10,000. */
  readonly pageSize?: number;
  /**
   * Worker threads that check pages (parse each record, hash its bytes, compare its columns and index) while
   * this thread reads the next ones and builds the Merkle tree; started once a log proves longer than one page.
   * Default: one per core (at most 4); 0 checks every page on this thread.
   */
  readonly threads?: number;
  /** Told the records read so far and the records in all, once per page (for a progress bar). */
  readonly onProgress?: OnProgress;
}

/**
 * Verify every log in the store.
 *
 * @example
 * const report = await verifyAudit(store, { keys: [parseVerifierKey("onbehalf@host-1+1a2b3c4d+AbC…")] });
 * if (!report.ok) console.log(report.logs.find((l) => l.finding)?.finding?.message);
 */
export async function verifyAudit(store: AuditStore, options: VerifyOptions): Promise<VerifyReport> {
  const threads = options.threads ?? Math.min(availableParallelism(), 4);
  if (!Number.isSafeInteger(threads) || threads < 0) {
    throw new OnbehalfError(
      "ERR_INVALID_ARGUMENT",
      `audit verify: threads must be a whole number, 0 or more (0: verify on this thread), not ${threads}`,
    );
  }
  const external = externalCheckpoints(options.external ?? []);
  const logs = options.logs ?? [...new Set([...(await store.logs()), ...external.keys()])].sort();
  const counter = await recordCounter(store, logs, options.onProgress);
  const checkers = pageCheckers(threads);
  const reports: LogReport[] = [];
  try {
    for (const log of logs)
      reports.push(await verifyLog(store, log, options, external.get(log) ?? [], counter, checkers));
  } finally {
    await checkers.close();
  }
  counter.end();
  return { ok: reports.every((r) => r.finding === null), logs: reports };
}

/** External signed notes by the log their origin names, as checkpoints to meet. */
function externalCheckpoints(notes: readonly string[]): Map<string, StoredCheckpoint[]> {
  const byLog = new Map<string, StoredCheckpoint[]>();
  for (const note of notes) {
    const head = parseCheckpoint(note);
    const list = byLog.get(head.origin) ?? [];
    list.push({
      log: head.origin,
      size: head.size,
      root: head.root.toString("hex"),
      note,
      time: "",
      subtrees: [],
    });
    byLog.set(head.origin, list);
  }
  return byLog;
}

async function verifyLog(
  store: AuditStore,
  log: string,
  options: VerifyOptions,
  external: readonly StoredCheckpoint[],
  counter: RecordCounter,
  checkers: PageCheckers,
): Promise<LogReport> {
  const pageSize = options.pageSize ?? 10_000;
  const keys = options.keys;
  const checkpoints = [...(await store.checkpoints(log)), ...external].sort((a, b) => a.size - b.size);
  const range = new CompactRange();
  let next = 0; // index of the next checkpoint to meet
  let verified = 0;
  let verifiedSize = 0;
  const report = (finding: Finding | null): LogReport => ({
    log,
    records: range.size,
    checkpoints: checkpoints.length,
    verifiedCheckpoints: verified,
    verifiedSize,
    root: range.root().toString("hex"),
    finding,
  });
  const found = (seq: number, problem: Problem, message: string) => report({ log, seq, problem, message });

  // The store's index is derived from the records: what it lacks is reported when the records themselves are
  // sound. Read after each page of rows (it commits with them), so records a running writer adds are covered.
  let unindexed: Finding | null = null;
  const pages = await pagesOf(store, log, pageSize, checkers);
  let expected = 1;
  let prevHash = GENESIS_HASH;
  for (
    let page = await pages.next(expected, prevHash);
    page !== null;
    page = await pages.next(expected, prevHash)
  ) {
    counter.read(page.count);
    unindexed ??= page.check.unindexed;
    const { bad } = page.check;
    const leaves = Buffer.from(page.leaves.buffer, page.leaves.byteOffset, page.leaves.byteLength);
    for (let at = 0; at < leaves.length; at += 32) {
      range.append(leaves.subarray(at, at + 32));
      while (checkpoints[next] !== undefined && checkpoints[next]!.size === range.size) {
        const problem = checkCheckpoint(checkpoints[next]!, log, range, keys);
        if (problem !== null) return found(problem.seq, problem.problem, problem.message);
        verified++;
        verifiedSize = range.size;
        next++;
      }
    }
    if (bad !== null) return report(bad.finding);
    expected = page.lastSeq + 1;
    prevHash = page.lastHash;
  }
  // Pages are read by sequence number from 1: a row numbered below 1, between two records or twice is in none.
  const stray = await store.strayRow(log, range.size);
  if (stray !== null) {
    return found(
      stray.seq,
      "edited",
      stray.rows > 1
        ? `record ${stray.seq} is stored ${stray.rows} times: rows were added to the log`
        : `a row numbered ${stray.seq} is not a record of the log (its records are numbered 1 to ${range.size}): it was added`,
    );
  }
  const beyond = checkpoints[next];
  if (beyond !== undefined) {
    const signedFor = signedCheckpointOk(beyond, log, keys);
    return found(
      range.size + 1,
      signedFor ? "deleted" : "forged_checkpoint",
      signedFor
        ? `a signed checkpoint covers ${beyond.size} records but only ${range.size} remain: records ${range.size + 1} to ${beyond.size} were deleted`
        : `the checkpoint at size ${beyond.size} is beyond the log's ${range.size} records and its signature does not verify`,
    );
  }
  const tail = range.size - verifiedSize;
  if (tail === 0 || options.acceptUnsigned === true) return report(unindexed);
  const writer = await runningWriter(store, log, verifiedSize, options);
  const allowed = verified > 0 && writer !== null ? (options.unsignedTail ?? 0) : 0;
  if (tail <= allowed) return report(unindexed);
  return found(
    verifiedSize + 1,
    "unverified",
    verified === 0
      ? `no checkpoint signed by a trusted key covers its ${range.size} records: nothing proves they were not rewritten`
      : writer === null
        ? `${tail} records follow the last verified checkpoint (size ${verifiedSize}), and no writer holds the log (a clean stop signs everything it wrote): nothing proves they were not added or rewritten`
        : `${tail} records follow the last verified checkpoint (size ${verifiedSize}), more than the ${allowed} a running writer leaves: nothing proves they were not rewritten`,
  );
}

/**
 * The writer running the log now, which may have committed records it has not signed yet: a claim renewed
 * within `staleMs`, unless this host's journal says the log's writer here stopped cleanly at the last verified
 * checkpoint (a claim row is only a row: whoever can write the database can leave one).
 */
async function runningWriter(
  store: AuditStore,
  log: string,
  verifiedSize: number,
  options: VerifyOptions,
): Promise<LogHolder | null> {
  const writer = await store.writer(log);
  if (writer === null || writer.idleMs > (options.staleMs ?? 20_000)) return null;
  const stopped = options.journal === undefined ? null : readJournal(options.journal, log);
  if (stopped?.state === "closed" && stopped.size === verifiedSize) return null;
  return writer;
}

function checkCheckpoint(
  cp: StoredCheckpoint,
  log: string,
  range: CompactRange,
  keys: readonly TrustedKey[],
): Finding | null {
  const root = range.root();
  let head: ReturnType<typeof verifyCheckpoint>;
  try {
    head = verifyCheckpoint(cp.note, keys);
  } catch (e) {
    return {
      log,
      seq: cp.size,
      problem: "forged_checkpoint",
      message: `checkpoint at size ${cp.size}: ${(e as Error).message}`,
    };
  }
  if (head.origin !== log || head.size !== cp.size) {
    return {
      log,
      seq: cp.size,
      problem: "forged_checkpoint",
      message: `the checkpoint stored at size ${cp.size} of ${log} signs size ${head.size} of ${head.origin}`,
    };
  }
  if (!head.root.equals(root)) {
    return {
      log,
      seq: cp.size,
      problem: "edited",
      message: `the records up to ${cp.size} do not hash to the root the checkpoint signs: they were rewritten`,
    };
  }
  if (cp.root !== root.toString("hex")) {
    return {
      log,
      seq: cp.size,
      problem: "forged_checkpoint",
      message: `the stored root of the checkpoint at size ${cp.size} differs from the root of the records`,
    };
  }
  return null;
}

function signedCheckpointOk(cp: StoredCheckpoint, log: string, keys: readonly TrustedKey[]): boolean {
  try {
    const head = verifyCheckpoint(cp.note, keys);
    return head.origin === log && head.size === cp.size;
  } catch {
    return false;
  }
}
