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

/** A stored row as read back for verification: the bytes as stored, not re-serialized. */
export interface StoredRow {
  readonly log: string;
  readonly seq: number;
  readonly canonical: string;
  readonly leafHash: string;
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
  close(): Promise<void>;
}
