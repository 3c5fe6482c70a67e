/**
 * Committed audit records sent on as OpenTelemetry log records over OTLP/HTTP (JSON), the shape
 * `audit export --format otel` writes (export.ts). Best effort beside the audit store, which stays the source of
 * truth: records are queued after they commit and sent in the background; a send never blocks or delays the
 * writer; a batch the endpoint does not take is retried a few times, then counted as failed and let go (at most
 * `maxQueue` records wait while the endpoint is away; more are counted failed at once).
 */
import { otlpRequest } from "./export.js";
import { recordOf, type SealedRecord } from "./record.js";

/** Where committed records go besides the store (the audit writer calls `push` after each commit). */
export interface AuditForwarder {
  push(records: readonly SealedRecord[]): void;
  /** Send what is queued (for at most a few seconds) and stop. */
  close(): Promise<void>;
  /** Records delivered. */
  readonly exported: number;
  /** Records not delivered: refused, unreachable after retries, or dropped from a full queue. */
  readonly failed: number;
}

export interface OtlpExportOptions {
  /** The OTLP/HTTP endpoint (`http://collector:4318`); records go to `<endpoint>/v1/logs`. */
  readonly endpoint: string;
  readonly headers?: Readonly<Record<string, string>>;
  readonly batchSize?: number;
  readonly maxQueue?: number;
  /** Attempts per batch. Default 3. */
  readonly attempts?: number;
  /** How long one request may take (ms). Default 10 s. */
  readonly timeoutMs?: number;
  /** How long `close` sends what is queued (ms). Default 5 s. */
  readonly closeMs?: number;
  readonly onError?: (message: string) => void;
  readonly fetch?: typeof fetch;
}

/**
 * Send committed audit records to an OTLP/HTTP logs endpoint.
 *
 * @example
 * const otlp = new OtlpAuditExporter({ endpoint: "http://127.0.0.1:4318" });
 * await openAuditLog(store, { logId, forward: otlp });
 */
export class OtlpAuditExporter implements AuditForwarder {
  exported = 0;
  failed = 0;
  private queue: SealedRecord[] = [];
  private sending: Promise<void> | undefined;
  private closing = false;
  private readonly url: string;
  private readonly batchSize: number;
  private readonly maxQueue: number;
  private readonly attempts: number;

  constructor(private readonly options: OtlpExportOptions) {
    const base = options.endpoint.replace(/\/+$/, "");
    this.url = base.endsWith("/v1/logs") ? base : `${base}/v1/logs`;
    this.batchSize = options.batchSize ?? 512;
    this.maxQueue = options.maxQueue ?? 10_000;
    this.attempts = options.attempts ?? 3;
  }

  push(records: readonly SealedRecord[]): void {
    const room = this.closing ? 0 : this.maxQueue - this.queue.length;
    if (records.length > room) {
      this.failed += records.length - Math.max(0, room);
      this.options.onError?.(
        `the OTLP export queue is full: ${records.length - room} audit records not sent`,
      );
    }
    if (room > 0) this.queue.push(...records.slice(0, room));
    this.sending ??= this.drain().finally(() => {
      this.sending = undefined;
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    const deadline = new Promise<void>((resolve) =>
      setTimeout(resolve, this.options.closeMs ?? 5000).unref(),
    );
    await Promise.race([this.sending ?? Promise.resolve(), deadline]);
    this.failed += this.queue.length;
    this.queue = [];
  }

  private async drain(): Promise<void> {
    // One macrotask later: the records of one busy moment leave together.
    await new Promise((resolve) => setImmediate(resolve));
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.batchSize);
      if (await this.send(batch)) this.exported += batch.length;
      else this.failed += batch.length;
    }
  }

  /** One batch, with retries; true once the endpoint took it. */
  private async send(batch: readonly SealedRecord[]): Promise<boolean> {
    const body = JSON.stringify(otlpRequest(batch.map(recordOf)));
    let problem = "";
    for (let attempt = 1; attempt <= this.attempts; attempt++) {
      try {
        const res = await (this.options.fetch ?? fetch)(this.url, {
          method: "POST",
          headers: { ...this.options.headers, "content-type": "application/json" },
          body,
          signal: AbortSignal.timeout(this.options.timeoutMs ?? 10_000),
        });
        await res.arrayBuffer().catch(() => undefined);
        if (res.ok) return true;
        problem = `HTTP ${res.status}`;
        if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) break;
      } catch (e) {
        problem = (e as Error).message;
      }
      if (attempt < this.attempts && !this.closing) await sleep(200 * 4 ** (attempt - 1));
    }
    this.options.onError?.(`OTLP export of ${batch.length} audit records to ${this.url} failed: ${problem}`);
    return false;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
