/**
 * The audit store interface. Every store (SQLite, PostgreSQL, memory) keeps records append-only, per log,
 * in sequence order, with the canonical bytes that were hashed.
 */
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
export const INDEXED_FIELDS = ["time", "tenant", "user", "tool", "decision", "agent", "call_id"] as const;
export type IndexedField = (typeof INDEXED_FIELDS)[number];

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

export interface AuditStore {
  /** Create tables and indexes if needed. */
  init(): Promise<void>;
  head(log: string): Promise<LogHead | null>;
  /** Append a batch in one transaction: all of it commits, or none of it does. */
  append(batch: readonly SealedRecord[]): Promise<void>;
  query(q: AuditQuery): Promise<AuditPage>;
  /** Every log id in the store. */
  logs(): Promise<string[]>;
  /** Rows of one log in sequence order, from `fromSeq`, in pages of `pageSize`. */
  rows(log: string, fromSeq: number, pageSize: number): Promise<StoredRow[]>;
  /** Leaf hashes (hex) of records `fromSeq` to `toSeq` inclusive, in sequence order. */
  leafHashes(log: string, fromSeq: number, toSeq: number): Promise<string[]>;
  putCheckpoint(checkpoint: StoredCheckpoint): Promise<void>;
  /** Checkpoints of a log, smallest size first. */
  checkpoints(log: string): Promise<StoredCheckpoint[]>;
  latestCheckpoint(log: string): Promise<StoredCheckpoint | null>;
  close(): Promise<void>;
}
