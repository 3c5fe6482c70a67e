/**
 * Shipping the audit to a SIEM: every record of every log, in sequence order, as JSON lines (the record as
 * stored, leaf hash included, so the receiver can re-verify it) or as OpenTelemetry log records (OTLP/JSON
 * `ExportLogsServiceRequest` objects, one per line, as the OpenTelemetry Collector's file receiver reads).
 */

import { type OnProgress, recordCounter } from "./progress.js";
import type { AuditRecord } from "./record.js";
import { recordFromRow } from "./sql.js";
import type { AuditStore } from "./store.js";

export type ExportFormat = "jsonl" | "otel";

export interface ExportOptions {
  readonly format: ExportFormat;
  /** Only records at or after this ISO time. */
  readonly since?: string;
  /** Records per OTLP request line (otel only). */
  readonly batch?: number;
  /** Told the records read so far and the records in all, once per page (for a progress bar). */
  readonly onProgress?: OnProgress;
}

/**
 * Write every record through `write`, one line at a time. Resolves to the number of records written.
 *
 * @example
 * await exportAudit(store, { format: "jsonl" }, (line) => process.stdout.write(line));
 */
export async function exportAudit(
  store: AuditStore,
  options: ExportOptions,
  write: (line: string) => void | Promise<void>,
): Promise<number> {
  const since = options.since === undefined ? undefined : new Date(options.since).toISOString();
  const batchSize = options.batch ?? 500;
  let count = 0;
  let pending: AuditRecord[] = [];
  const flushOtel = async () => {
    if (pending.length > 0) await write(`${JSON.stringify(otlpRequest(pending))}\n`);
    pending = [];
  };
  const logs = await store.logs();
  const counter = await recordCounter(store, logs, options.onProgress);
  for (const log of logs) {
    for (let from = 1; ; ) {
      const rows = await store.rows(log, from, 5000);
      if (rows.length === 0) break;
      counter.read(rows.length);
      for (const row of rows) {
        const record = recordFromRow(row.canonical, row.leafHash);
        if (since !== undefined && record.time < since) continue;
        count++;
        if (options.format === "jsonl") await write(`${JSON.stringify(record)}\n`);
        else {
          pending.push(record);
          if (pending.length >= batchSize) await flushOtel();
        }
      }
      from = rows[rows.length - 1]!.seq + 1;
    }
  }
  await flushOtel();
  counter.end();
  return count;
}

type AnyValue = { stringValue: string } | { intValue: string } | { arrayValue: { values: AnyValue[] } };

/** One OTLP/JSON ExportLogsServiceRequest for a batch of records. */
export function otlpRequest(records: readonly AuditRecord[]) {
  return {
    resourceLogs: [
      {
        resource: { attributes: [attr("service.name", "onbehalf")] },
        scopeLogs: [{ scope: { name: "onbehalf.audit" }, logRecords: records.map(otlpLogRecord) }],
      },
    ],
  };
}

function otlpLogRecord(r: AuditRecord) {
  const nanos = `${BigInt(Date.parse(r.time)) * 1_000_000n}`;
  const denied = r.decision !== "allow" || r.outcome === "error" || r.outcome === "blocked";
  const attributes = [
    attr("onbehalf.log", r.log),
    int("onbehalf.seq", r.seq),
    attr("onbehalf.kind", r.kind),
    attr("onbehalf.decision", r.decision),
    attr("onbehalf.reason_code", r.reason_code),
    attr("onbehalf.outcome", r.outcome),
    attr("onbehalf.call_id", r.call_id),
    attr("onbehalf.source", r.source),
    attr("onbehalf.leaf_hash", r.leaf_hash),
    int("onbehalf.latency_us", r.latency_us),
    { key: "onbehalf.chain", value: { arrayValue: { values: r.chain.map((c) => ({ stringValue: c })) } } },
  ];
  for (const [key, value] of [
    ["enduser.id", r.user],
    ["onbehalf.tenant", r.tenant],
    ["onbehalf.email", r.email],
    ["onbehalf.agent", r.agent],
    ["onbehalf.tier", r.tier],
    ["onbehalf.tool", r.tool],
    ["onbehalf.rule", r.rule],
    ["onbehalf.trace_id", r.trace_id],
    ["onbehalf.args_digest", r.args_digest],
  ] as const) {
    if (value !== null) attributes.push(attr(key, value));
  }
  return {
    timeUnixNano: nanos,
    observedTimeUnixNano: nanos,
    severityNumber: denied ? 13 : 9,
    severityText: denied ? "WARN" : "INFO",
    eventName: `onbehalf.tool_call.${r.kind}`,
    body: {
      stringValue: `${r.user ?? "anonymous"} → ${r.tool ?? "?"}: ${r.decision} (${r.reason_code}) ${r.reason}`,
    },
    attributes,
  };
}

function attr(key: string, value: string): { key: string; value: AnyValue } {
  return { key, value: { stringValue: value } };
}

function int(key: string, value: number): { key: string; value: AnyValue } {
  return { key, value: { intValue: String(value) } };
}
