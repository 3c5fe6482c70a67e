/**
 * The explorer's query: the store's indexed filters and keyset pagination (newest first), plus the filters the
 * store has no column for (reason code, record kind), applied while reading pages, with a bound on the rows one
 * request reads so that a rare reason over a large log answers in time (with a cursor to read on).
 */
import type { AuditRecord } from "../../audit/record.js";
import { encodeCursor } from "../../audit/sql.js";
import type { AuditQuery, AuditStore } from "../../audit/store.js";

/** Filters the store does not index. */
export interface RecordFilter {
  readonly reason_code?: string;
  readonly kind?: string;
}

export interface ConsolePage {
  readonly records: AuditRecord[];
  readonly next_cursor: string | null;
  /** Rows read to fill the page. */
  readonly scanned: number;
  /** True when the page stopped at the read bound before it was full: more may match after `next_cursor`. */
  readonly partial: boolean;
}

/** Rows one request reads at most to fill a page filtered by reason or kind. */
export const SCAN_BUDGET = 20_000;
const READ_PAGE = 1000;

/**
 * A page of at most `limit` records matching `q` and `filter`, newest first.
 *
 * @example
 * await consolePage(store, { tenant: "acme" }, { kind: "attempt" }, 50);
 */
export async function consolePage(
  store: AuditStore,
  q: AuditQuery,
  filter: RecordFilter,
  limit: number,
): Promise<ConsolePage> {
  if (filter.reason_code === undefined && filter.kind === undefined) {
    const page = await store.query({ ...q, limit });
    return { ...page, scanned: page.records.length, partial: false };
  }
  const records: AuditRecord[] = [];
  let cursor = q.cursor;
  let scanned = 0;
  for (;;) {
    const page = await store.query({ ...q, limit: READ_PAGE, ...(cursor === undefined ? {} : { cursor }) });
    for (const r of page.records) {
      scanned++;
      if (!matches(r, filter)) continue;
      records.push(r);
      if (records.length === limit) return { records, next_cursor: encodeCursor(r), scanned, partial: false };
    }
    if (page.next_cursor === null) return { records, next_cursor: null, scanned, partial: false };
    cursor = page.next_cursor;
    if (scanned >= SCAN_BUDGET) return { records, next_cursor: cursor, scanned, partial: true };
  }
}

/**
 * Every record matching `q` and `filter`, newest first, page by page (for export).
 *
 * @example
 * for await (const r of everyRecord(store, { tenant: "acme" }, {})) write(r);
 */
export async function* everyRecord(
  store: AuditStore,
  q: AuditQuery,
  filter: RecordFilter,
): AsyncGenerator<AuditRecord> {
  let cursor: string | undefined;
  for (;;) {
    const page = await store.query({ ...q, limit: READ_PAGE, ...(cursor === undefined ? {} : { cursor }) });
    for (const r of page.records) if (matches(r, filter)) yield r;
    if (page.next_cursor === null) return;
    cursor = page.next_cursor;
  }
}

function matches(r: AuditRecord, f: RecordFilter): boolean {
  return (
    (f.reason_code === undefined || r.reason_code === f.reason_code) &&
    (f.kind === undefined || r.kind === f.kind)
  );
}

/** The CSV columns of an export: the record's fields, nested ones as JSON. */
export const CSV_COLUMNS = [
  "log",
  "seq",
  "time",
  "kind",
  "tenant",
  "user",
  "email",
  "agent",
  "tier",
  "chain",
  "tool",
  "args_digest",
  "args",
  "decision",
  "reason_code",
  "reason",
  "rule",
  "outcome",
  "trace_id",
  "call_id",
  "latency_us",
  "source",
  "leaf_hash",
] as const;

/**
 * One CSV line (RFC 4180) of a record. A cell that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`,
 * tab, carriage return first) is prefixed with `'`.
 *
 * @example
 * csvLine(record); // "onbehalf@host-1,5,2026-11-29T10:00:00.000Z,attempt,acme,alice,…\r\n"
 */
export function csvLine(r: AuditRecord | null): string {
  const cells =
    r === null
      ? [...CSV_COLUMNS]
      : CSV_COLUMNS.map((c) => {
          const v = (r as unknown as Record<string, unknown>)[c];
          return v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);
        });
  return `${cells.map(csvCell).join(",")}\r\n`;
}

function csvCell(value: string): string {
  const safe = /^[=+\-@\t\r]/.test(value) ? `'${value}` : value;
  return /[",\r\n]/.test(safe) ? `"${safe.replaceAll('"', '""')}"` : safe;
}
