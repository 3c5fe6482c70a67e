/**
 * The audit log writer. `append()` is synchronous and cheap: it gives the record the next sequence number and
 * queues it. The writer, running between calls, seals queued records in sequence order (canonical bytes, link
 * to the previous record, leaf hash) and writes them by group commit: one transaction per batch, started as
 * soon as a batch is full or `flushMs` after the first record queued. A record is acknowledged when its batch
 * commits; `flush()` and `close()` wait for everything queued.
 *
 * If the store fails, the sealed batch is kept and retried with backoff; `healthy` turns false so the
 * governor denies calls (fail closed) until a write succeeds again.
 */
import { OnbehalfError } from "../errors.js";
import { type AuditFields, GENESIS_HASH, type SealedRecord, seal } from "./record.js";
import type { AuditStore } from "./store.js";

export interface AuditLogOptions {
  /** This writer's log id (the checkpoint origin). */
  readonly logId: string;
  readonly batchSize?: number;
  readonly flushMs?: number;
  /** Records kept while the store is down; beyond it appends fail (and the governor denies). */
  readonly maxQueue?: number;
  readonly onError?: (error: unknown) => void;
  /** Called with each batch after it commits (checkpointing hooks in here). */
  readonly onCommit?: (batch: readonly SealedRecord[]) => void;
}

/**
 * Open the writer for `options.logId` on `store`, continuing after the last stored record.
 *
 * @example
 * const log = await openAuditLog(store, { logId: "onbehalf@host-1" });
 * log.append(fields); await log.close();
 */
export async function openAuditLog(store: AuditStore, options: AuditLogOptions): Promise<AuditLog> {
  await store.init();
  const head = await store.head(options.logId);
  return new AuditLog(store, options, head?.seq ?? 0, head?.leafHash ?? GENESIS_HASH);
}

interface Queued {
  readonly fields: AuditFields;
  readonly seq: number;
}

interface Waiter {
  readonly upTo: number;
  readonly resolve: () => void;
  readonly reject: (e: unknown) => void;
}

export class AuditLog {
  readonly logId: string;
  /** Records written since open. */
  committed = 0;
  /** Appends refused because the queue was full while the store was down. */
  dropped = 0;
  /** Queued, not yet sealed. */
  private queue: Queued[] = [];
  /** Sealed, not yet committed: the batch being written, or a failed one waiting for its retry. */
  private sealed: SealedRecord[] = [];
  private waiters: Waiter[] = [];
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private writing: Promise<void> | undefined;
  private failures = 0;
  private closed = false;
  private readonly batchSize: number;
  private readonly flushMs: number;
  private readonly maxQueue: number;

  constructor(
    private readonly store: AuditStore,
    private readonly options: AuditLogOptions,
    private seq: number,
    private lastHash: string,
  ) {
    this.logId = options.logId;
    this.batchSize = options.batchSize ?? 512;
    this.flushMs = options.flushMs ?? 5;
    this.maxQueue = options.maxQueue ?? 100_000;
  }

  /** False after a failed write, until a write succeeds. The governor denies while it is false. */
  get healthy(): boolean {
    return this.failures === 0;
  }

  /** The last sequence number handed out. */
  get lastSeq(): number {
    return this.seq;
  }

  /** Queue a record; returns its sequence number. Never blocks on the store. */
  append(fields: AuditFields): number {
    if (this.closed) throw new OnbehalfError("ERR_CLOSED", "the audit log is closed");
    if (this.queue.length + this.sealed.length >= this.maxQueue) {
      this.dropped++;
      throw new OnbehalfError(
        "ERR_AUDIT_UNAVAILABLE",
        "the audit queue is full: the store is not accepting writes",
      );
    }
    const seq = ++this.seq;
    this.queue.push({ fields, seq });
    this.kick(this.queue.length >= this.batchSize ? 0 : this.flushMs);
    return seq;
  }

  /** Append and wait until the record has committed (durability `sync`). */
  appendDurable(fields: AuditFields): Promise<number> {
    const seq = this.append(fields);
    this.kick(0);
    return this.acknowledged(seq).then(() => seq);
  }

  /** Resolves when every record up to `seq` has committed; rejects if the store keeps failing. */
  acknowledged(seq: number): Promise<void> {
    if (this.committedSeq() >= seq) return Promise.resolve();
    return new Promise((resolve, reject) => this.waiters.push({ upTo: seq, resolve, reject }));
  }

  /** Write everything queued now; resolves when it has committed. */
  async flush(): Promise<void> {
    const target = this.seq;
    this.kick(0);
    await this.acknowledged(target);
  }

  /** Flush and stop. Further appends throw `ERR_CLOSED`. */
  async close(): Promise<void> {
    try {
      await this.flush();
    } finally {
      this.closed = true;
      if (this.timer) clearTimeout(this.timer);
      if (this.immediate) clearImmediate(this.immediate);
      this.timer = undefined;
      this.immediate = undefined;
      const failed = new OnbehalfError("ERR_CLOSED", "the audit log closed before this record was written");
      for (const w of this.waiters.splice(0)) w.reject(failed);
    }
  }

  private committedSeq(): number {
    const first = this.sealed[0] ?? this.queue[0];
    return first === undefined ? this.seq : first.seq - 1;
  }

  private kick(delay: number): void {
    if (this.writing !== undefined) return; // the running write re-kicks when it finishes
    if (this.timer !== undefined) {
      if (delay > 0) return;
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (delay === 0) {
      this.immediate ??= setImmediate(() => this.startWriting());
      return;
    }
    this.timer = setTimeout(() => this.startWriting(), delay);
  }

  private startWriting(): void {
    this.timer = undefined;
    this.immediate = undefined;
    if (this.writing !== undefined) return;
    this.writing = this.writeBatches().finally(() => {
      this.writing = undefined;
      if (this.queue.length + this.sealed.length > 0 && !this.closed) {
        this.kick(this.failures > 0 ? this.backoff() : 0);
      }
    });
  }

  private async writeBatches(): Promise<void> {
    while (this.sealed.length > 0 || this.queue.length > 0) {
      if (this.sealed.length === 0) this.sealNext();
      const batch = this.sealed;
      try {
        await this.store.append(batch);
      } catch (e) {
        this.failures++;
        this.options.onError?.(e);
        if (this.closed || this.failures >= 3) this.rejectWaiters(e);
        return;
      }
      this.failures = 0;
      this.sealed = [];
      this.committed += batch.length;
      this.options.onCommit?.(batch);
      this.resolveWaiters();
    }
  }

  /** Seal the next batch in sequence order, advancing the chain. */
  private sealNext(): void {
    const n = Math.min(this.batchSize, this.queue.length);
    const next = this.queue.splice(0, n);
    const out: SealedRecord[] = new Array(n);
    let prev = this.lastHash;
    for (let i = 0; i < n; i++) {
      const q = next[i]!;
      const s = seal(q.fields, this.logId, q.seq, prev);
      out[i] = s;
      prev = s.leafHash;
    }
    this.lastHash = prev;
    this.sealed = out;
  }

  private backoff(): number {
    return Math.min(5_000, 50 * 2 ** Math.min(this.failures, 7));
  }

  private resolveWaiters(): void {
    if (this.waiters.length === 0) return;
    const done = this.committedSeq();
    const still: Waiter[] = [];
    for (const w of this.waiters) {
      if (w.upTo <= done) w.resolve();
      else still.push(w);
    }
    this.waiters = still;
  }

  private rejectWaiters(e: unknown): void {
    const error =
      e instanceof OnbehalfError
        ? e
        : new OnbehalfError("ERR_AUDIT_UNAVAILABLE", "audit write failed", { cause: e });
    for (const w of this.waiters.splice(0)) w.reject(error);
  }
}
