/**
 * `audit verify`'s checks of the records themselves, a page at a time: each row's sequence number, bytes (its
 * leaf hash), link to the record before it and indexed columns, and the store's block index against them. Pure
 * functions over plain data, so that a page is checked the same on the verifying thread or on a worker
 * (verify-pool.ts); the log's Merkle tree and its checkpoints stay with the caller, in order.
 */
import { leafHash } from "./record.js";
import { keysOf } from "./sqlite-index.js";
import { type BlockIndex, INDEXED_FIELDS, type StoredRow } from "./store.js";

export type Problem = "deleted" | "reordered" | "edited" | "forged_checkpoint" | "unverified";

export interface Finding {
  readonly log: string;
  /** The first sequence number found wrong (for a checkpoint problem: its size). */
  readonly seq: number;
  readonly problem: Problem;
  readonly message: string;
}

/** One page of a log's rows to check, and what the pages before it left: the next sequence number and hash. */
export interface PageJob {
  readonly log: string;
  readonly rows: readonly StoredRow[];
  /** The sequence number the page's first row must have. */
  readonly expected: number;
  /**
   * The leaf hash the page's first record must link to; null when the pages before it are not read yet (a page
   * read on a worker): its first link is then the caller's to check, with {@link firstLink}.
   */
  readonly prevHash: string | null;
  /** The store's block index over the page's sequence numbers, when the store keeps one. */
  readonly index: BlockIndex | undefined;
}

export interface PageCheck {
  /** The first row found wrong: its place in the page and what is wrong (the rows before it are sound). */
  readonly bad: { readonly at: number; readonly finding: Finding } | null;
  /** The first sound row, before `bad`, that the block index does not list. */
  readonly unindexed: Finding | null;
}

/** A page read and checked: what the Merkle tree and the pages after it need of it. */
export interface CheckedPage {
  readonly check: PageCheck;
  /** Rows read. */
  readonly count: number;
  /** The first row's sequence number, and the hash its record links to (null: no rows, or not a record). */
  readonly firstSeq: number | null;
  readonly firstLink: string | null;
  /** The last row's sequence number and leaf hash (hex); `from - 1` and "" for a page without rows. */
  readonly lastSeq: number;
  readonly lastHash: string;
  /** The leaf hashes of the rows before `check.bad` (all of them when none is), 32 bytes each. */
  readonly leaves: Uint8Array;
}

/** What the tree takes of `rows` read from `from` and checked; `firstLink`: what the first record links to. */
export function checkedPage(
  rows: readonly StoredRow[],
  from: number,
  firstLink: string | null,
  check: PageCheck,
): CheckedPage {
  const sound = check.bad === null ? rows.length : check.bad.at;
  const leaves = new Uint8Array(32 * sound); // an ArrayBuffer of its own, to be transferred
  const bytes = Buffer.from(leaves.buffer);
  for (let i = 0; i < sound; i++) bytes.write(rows[i]!.leafHash, 32 * i, "hex");
  const last = rows[rows.length - 1];
  return {
    check,
    count: rows.length,
    firstSeq: rows[0]?.seq ?? null,
    firstLink: rows.length === 0 ? null : firstLink,
    lastSeq: last?.seq ?? from - 1,
    lastHash: last?.leafHash ?? "",
    leaves,
  };
}

/**
 * Check a page's rows in order, up to the first one found wrong.
 *
 * @example
 * const { bad } = checkPage({ log: "main", rows, expected: 1, prevHash: GENESIS_HASH, index: undefined });
 */
export function checkPage(job: PageJob): PageCheck {
  const { log, rows, index } = job;
  let expected = job.expected;
  let prevHash = job.prevHash;
  let unindexed: Finding | null = null;
  for (let at = 0; at < rows.length; at++) {
    const row = rows[at]!;
    const finding = checkRow(row, log, expected, prevHash);
    if (finding !== null) return { bad: { at, finding }, unindexed };
    if (index !== undefined) unindexed ??= checkIndexed(row, log, index);
    prevHash = row.leafHash;
    expected++;
  }
  return { bad: null, unindexed };
}

/** The hash a page's first record links to, as its bytes say (null when they are not a record). */
export function firstLink(rows: readonly StoredRow[]): string | null {
  try {
    const prev = (JSON.parse(rows[0]?.canonical ?? "null") as { prev_hash?: unknown } | null)?.prev_hash;
    return typeof prev === "string" ? prev : null;
  } catch {
    return null;
  }
}

function checkRow(row: StoredRow, log: string, expected: number, prevHash: string | null): Finding | null {
  const seq = row.seq;
  if (seq !== expected) {
    return {
      log,
      seq: expected,
      problem: "deleted",
      message: `record ${expected}${seq - 1 > expected ? ` to ${seq - 1}` : ""} is missing: deleted`,
    };
  }
  if (typeof row.canonical !== "string") {
    return { log, seq, problem: "edited", message: `record ${seq} is not stored as text any more: edited` };
  }
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(row.canonical) as Record<string, unknown>;
  } catch {
    return { log, seq, problem: "edited", message: `record ${seq} is not valid JSON any more: edited` };
  }
  if (record["seq"] !== seq || record["log"] !== log) {
    return {
      log,
      seq,
      problem: "reordered",
      message: `the row at ${seq} holds record ${String(record["seq"])} of log ${String(record["log"])}: records were reordered or moved`,
    };
  }
  if (leafHash(row.canonical) !== row.leafHash) {
    return {
      log,
      seq,
      problem: "edited",
      message: `record ${seq} does not match its leaf hash: it was edited`,
    };
  }
  if (prevHash !== null && record["prev_hash"] !== prevHash) {
    return {
      log,
      seq,
      problem: "deleted",
      message: `record ${seq} does not link to record ${seq - 1}: a record before it was deleted (and the rest renumbered) or replaced`,
    };
  }
  for (const field of INDEXED_FIELDS) {
    if ((record[field] ?? null) !== row.columns[field]) {
      return {
        log,
        seq,
        problem: "edited",
        message: `record ${seq}'s indexed column ${field} (${JSON.stringify(row.columns[field])}) disagrees with the record (${JSON.stringify(record[field])}): edited`,
      };
    }
  }
  return null;
}

/**
 * A record the store's block index does not list (a key missing from its block, or its time outside the block's
 * range) is one a query would not find: the index was edited.
 */
function checkIndexed(row: StoredRow, log: string, index: BlockIndex): Finding | null {
  const block = Math.floor(row.seq / index.blockSize);
  const missing = keysOf(row.columns).find((key) => !index.keys.has(`${block} ${key}`));
  const range = index.blocks.get(block);
  const time = row.columns.time ?? "";
  if (missing === undefined && range !== undefined && range[0] <= time && time <= range[1]) return null;
  const what =
    missing !== undefined ? `does not list it under ${missing}` : "does not cover its time in its block";
  return {
    log,
    seq: row.seq,
    problem: "edited",
    message: `the store's index ${what}, so queries would not find record ${row.seq}: the index was edited`,
  };
}
