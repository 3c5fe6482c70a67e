/**
 * The audit store interface. Every store (SQLite, PostgreSQL, memory) keeps records append-only, per log,
 * in sequence order, with the canonical bytes that were hashed.
 */
import { type ErrorCode, OnbehalfError } from "../errors.js";
import type { AuditRecord, SealedRecord } from "./record.js";

/** The newest record of a log: where a restarted writer continues. */
export interface LogHead {
  readonly seq: number;
  readonly leafHash: string;
}

/** Filters of `audit query` and `GET /v1/audit`. All optional; `since`/`until` are ISO 8601 times. */
export interface AuditQuery {
  readonly tenant?: string;
  readonly user?: string;
  readonly tool?: string;
  readonly decision?: string;
  readonly agent?: string;
  readonly call_id?: string;
  /** The records of one run. */
  readonly trace_id?: string;
  readonly since?: string;
  readonly until?: string;
  /** At most this many records (default 100, at most 1000). */
  readonly limit?: number;
  /** Opaque cursor from a previous answer's `next_cursor`. */
  readonly cursor?: string;
}

export interface AuditPage {
  readonly records: AuditRecord[];
  readonly next_cursor: string | null;
}

/** The fields stores keep in their own indexed columns, next to the record. */
export const INDEXED_FIELDS = [
  "time",
  "tenant",
  "user",
  "tool",
  "decision",
  "agent",
  "call_id",
  "trace_id",
] as const;
export type IndexedField = (typeof INDEXED_FIELDS)[number];

/**
 * Part of the block index of one log (the SQLite store's, sqlite-index.ts), as `audit verify` checks it against
 * the records: every record's keys listed for its block, and its time inside its block's range.
 */
export interface BlockIndex {
  readonly blockSize: number;
  /** `<block> <key>` for every key of those blocks (keys: `user:…`, `tenant:…`, `tool:…`, `trace:…`). */
  readonly keys: ReadonlySet<string>;
  /** Time range per block. */
  readonly blocks: ReadonlyMap<number, readonly [string, string]>;
}

/** A stored row as read back for verification: the bytes as stored, not re-serialized. */
export interface StoredRow {
  readonly log: string;
  readonly seq: number;
  readonly canonical: string;
  readonly leafHash: string;
  /** The indexed columns as stored (verification checks they agree with the record). */
  readonly columns: Readonly<Record<IndexedField, string | null>>;
}

/** A signed checkpoint as stored, with the writer's compact range at that size (to resume from). */
export interface StoredCheckpoint {
  readonly log: string;
  readonly size: number;
  /** Hex root hash. */
  readonly root: string;
  /** The signed note, as signed. */
  readonly note: string;
  readonly time: string;
  /** Hex roots of the perfect subtrees at this size, largest first (unsigned writer state). */
  readonly subtrees: readonly string[];
}

/**
 * A writer's claim on a log. One writer per log at a time: two writers would hand out the same sequence
 * numbers and fork the hash chain. The claim is a lease row renewed by every batch and by a heartbeat.
 */
export interface WriterClaim {
  /** Unique per writer: host, process id and a random part. */
  readonly holder: string;
  readonly host: string;
  readonly pid: number;
  /** What the writer is, shown to a writer that is refused (e.g. "onbehalf serve, port 8787"). */
  readonly label: string;
}

/** The writer holding a log, as another writer sees it. */
export interface LogHolder {
  readonly holder: string;
  readonly host: string;
  readonly pid: number;
  readonly label: string;
  /** ISO time the claim was taken. */
  readonly since: string;
  /** Milliseconds since the holder last renewed its claim. */
  readonly idleMs: number;
}

/** What claiming a log found: refused by a live holder, or taken (from a previous holder, or fresh). */
export type ClaimResult = { readonly refused: LogHolder } | { readonly previous: LogHolder | null };

export interface ClaimOptions {
  /** A claim not renewed for this long is abandoned and may be taken over. */
  readonly staleMs: number;
  /** True when the holder is known to be gone (a process of this host that no longer runs). */
  readonly gone: (holder: LogHolder) => boolean;
}

/**
 * Why a store operation failed, which decides what the writer does:
 * `unavailable`: the store is down or unreachable (retry with backoff; calls fail closed meanwhile);
 * `rejected`: the store refused a record for its content (store the rest; never retry it as it is);
 * `conflict`: another writer holds the log (stop writing: the claim is lost);
 * `busy`: another process holds the store's write lock for now (SQLite): try again shortly, without blocking;
 * `gap`: the batch does not follow the log's last record: the batch before it did not commit (a pipelined store).
 */
export type StoreFailure = "unavailable" | "rejected" | "conflict" | "busy" | "gap";

/** A store error: an `OnbehalfError` that says which {@link StoreFailure} it is. */
export function storeError(
  failure: StoreFailure,
  message: string,
  cause?: unknown,
  code: ErrorCode = failure === "conflict" ? "ERR_CONFLICT" : "ERR_AUDIT_UNAVAILABLE",
): OnbehalfError {
  return new OnbehalfError(code, message, { cause, details: { failure } });
}

/** The {@link StoreFailure} of an error from a store (anything unclassified counts as `unavailable`). */
export function failureOf(e: unknown): StoreFailure {
  const failure = (e instanceof OnbehalfError ? (e.details as { failure?: unknown }) : undefined)?.failure;
  return failure === "rejected" || failure === "conflict" || failure === "busy" || failure === "gap"
    ? failure
    : "unavailable";
}

export interface AuditStore {
  /** Create tables and indexes if needed. */
  init(): Promise<void>;
  head(log: string): Promise<LogHead | null>;
  /**
   * Take the claim on `log` for `claim.holder` (renewing it when already held by it, taking it over when its
   * holder is gone or stale). Resolves to `{ refused }`, the live holder that keeps it, or `{ previous }`: the
   * holder whose claim was taken over (it stopped without releasing it: a crash), or null when there was none
   * (a new log, or its last writer released it on a clean stop).
   */
  claim(log: string, claim: WriterClaim, options: ClaimOptions): Promise<ClaimResult>;
  /** The writer holding `log` now (running, or stopped without releasing it), or null. */
  writer(log: string): Promise<LogHolder | null>;
  /** Renew a held claim; false when it is no longer held by `holder` (another writer took it over). */
  renew(log: string, holder: string): Promise<boolean>;
  /** Give the claim up (a clean shutdown), so the next writer need not wait for it to go stale. */
  release(log: string, holder: string): Promise<void>;
  /**
   * Append a batch of one log in one transaction: all of it commits, or none of it does. It commits only while
   * `holder` holds the log's claim (else a `conflict` error), and renews the claim.
   */
  append(batch: readonly SealedRecord[], holder: string): Promise<void>;
  /**
   * True when the writer may append the next batch before the one before it has settled: the store commits
   * appends in the order they were called, and refuses (`gap`) a batch that does not follow the log's last
   * record, so a batch sent behind one that failed never commits ahead of it.
   */
  readonly pipelined?: boolean;
  query(q: AuditQuery): Promise<AuditPage>;
  /** Every log id in the store: with records, checkpoints or a writer (a log whose records were all deleted too). */
  logs(): Promise<string[]>;
  /** Rows of one log in sequence order, from `fromSeq`, in pages of `pageSize`. */
  rows(log: string, fromSeq: number, pageSize: number): Promise<StoredRow[]>;
  /**
   * The first row of `log` up to `toSeq` that is not one of its records 1 to `toSeq`, each once: a sequence number
   * below 1, between two integers, of another type, or stored twice (`audit verify`: pages are read by sequence
   * number from 1, so such a row is in no page). Null when there is none.
   */
  strayRow(log: string, toSeq: number): Promise<{ readonly seq: number; readonly rows: number } | null>;
  /** Leaf hashes (hex) of records `fromSeq` to `toSeq` inclusive, in sequence order. */
  leafHashes(log: string, fromSeq: number, toSeq: number): Promise<string[]>;
  putCheckpoint(checkpoint: StoredCheckpoint): Promise<void>;
  /** Checkpoints of a log, smallest size first. */
  checkpoints(log: string): Promise<StoredCheckpoint[]>;
  latestCheckpoint(log: string): Promise<StoredCheckpoint | null>;
  /**
   * Stores that find records through a block index (SQLite): that index for the blocks of `log` holding
   * `fromSeq` to `toSeq`, for `audit verify` (read after the rows it checks, so it covers every one of them).
   */
  blockIndex?(log: string, fromSeq: number, toSeq: number): Promise<BlockIndex>;
  /**
   * The SQLite file holding the store, which other threads may open to read it (`audit verify` reads and checks
   * pages of a large log on worker threads). Absent where another thread cannot open it (PostgreSQL, `:memory:`).
   */
  readonly file?: string;
  close(): Promise<void>;
}
