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
import type { KeyObject } from "node:crypto";
import { OnbehalfError } from "../errors.js";
import { signCheckpoint } from "./checkpoint.js";
import { CompactRange } from "./merkle.js";
import { type AuditFields, GENESIS_HASH, type SealedRecord, seal, timestamp } from "./record.js";
import type { AuditStore } from "./store.js";

/** When the writer signs a checkpoint of its log: every `every` records, every `seconds`, and on close. */
export interface CheckpointPolicy {
  /** The Ed25519 key that signs (its name is the log id, the checkpoint origin). */
  readonly key: KeyObject;
  readonly every: number;
  readonly seconds: number;
}

export interface AuditLogOptions {
  /** This writer's log id (the checkpoint origin). */
  readonly logId: string;
  readonly batchSize?: number;
  readonly flushMs?: number;
  /** Records kept while the store is down; beyond it appends fail (and the governor denies). */
  readonly maxQueue?: number;
  readonly onError?: (error: unknown) => void;
  /** Sign checkpoints of the Merkle tree over this log. */
  readonly checkpoints?: CheckpointPolicy;
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
  const size = head?.seq ?? 0;
  const tree = options.checkpoints === undefined ? undefined : await resumeTree(store, options.logId, size);
  const log = new AuditLog(store, options, size, head?.leafHash ?? GENESIS_HASH, tree);
  log.startCheckpointTimer();
  return log;
}

/**
 * The compact range of the log's Merkle tree at `size`: from the latest checkpoint's stored range, then the
 * leaves after it. A checkpoint beyond the stored records means records were removed: refuse to go on.
 */
async function resumeTree(
  store: AuditStore,
  logId: string,
  size: number,
): Promise<{ range: CompactRange; checkpointed: number }> {
  const latest = await store.latestCheckpoint(logId);
  if (latest !== null && latest.size > size) {
    throw new OnbehalfError(
      "ERR_AUDIT_UNAVAILABLE",
      `log ${logId} has a checkpoint at size ${latest.size} but only ${size} records: records were removed; run \`onbehalf audit verify\``,
    );
  }
  const range =
    latest === null
      ? new CompactRange()
      : new CompactRange(
          latest.size,
          latest.subtrees.map((h) => Buffer.from(h, "hex")),
        );
  for (let from = range.size + 1; from <= size; from += 50_000) {
    for (const leaf of await store.leafHashes(logId, from, Math.min(size, from + 49_999)))
      range.append(Buffer.from(leaf, "hex"));
  }
  return { range, checkpointed: latest?.size ?? 0 };
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
  /**
   * Sealed, not yet committed, oldest first: the batch being written (or a failed one waiting for its retry)
   * and at most one sealed ahead while that write is in flight.
   */
  private sealed: SealedRecord[][] = [];
  /** Records in `sealed`. */
  private sealedCount = 0;
  private waiters: Waiter[] = [];
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private writing: Promise<void> | undefined;
  private failures = 0;
  private closed = false;
  private readonly batchSize: number;
  private readonly flushMs: number;
  private readonly maxQueue: number;
  private checkpointTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: AuditStore,
    private readonly options: AuditLogOptions,
    private seq: number,
    private lastHash: string,
    /** The Merkle tree over committed records, and the size of the last signed checkpoint. */
    private readonly tree?: { range: CompactRange; checkpointed: number },
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
    if (this.queue.length + this.sealedCount >= this.maxQueue) {
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

  /** The tree head over committed records (when checkpointing is on). */
  get treeSize(): number {
    return this.tree?.range.size ?? 0;
  }

  /** Sign and store a checkpoint now if records were committed since the last one. */
  async checkpoint(): Promise<void> {
    const tree = this.tree;
    const policy = this.options.checkpoints;
    if (tree === undefined || policy === undefined || tree.range.size === tree.checkpointed) return;
    const size = tree.range.size;
    const root = tree.range.root();
    await this.store.putCheckpoint({
      log: this.logId,
      size,
      root: root.toString("hex"),
      note: signCheckpoint({ origin: this.logId, size, root }, this.logId, policy.key),
      time: timestamp(Date.now()),
      subtrees: tree.range.subtrees.map((h) => h.toString("hex")),
    });
    tree.checkpointed = Math.max(tree.checkpointed, size);
  }

  /** @internal Called once by openAuditLog. */
  startCheckpointTimer(): void {
    const seconds = this.options.checkpoints?.seconds;
    if (seconds === undefined || seconds <= 0) return;
    this.checkpointTimer = setInterval(() => {
      if (this.writing === undefined) this.checkpoint().catch((e: unknown) => this.options.onError?.(e));
    }, seconds * 1000);
    this.checkpointTimer.unref();
  }

  /** Flush, sign a final checkpoint, and stop. Further appends throw `ERR_CLOSED`. */
  async close(): Promise<void> {
    if (this.checkpointTimer) clearInterval(this.checkpointTimer);
    try {
      await this.flush();
      await this.checkpoint();
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
    const first = this.sealed[0]?.[0] ?? this.queue[0];
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
    // The timer only schedules the write: work done inside a timer callback (and the callers it wakes)
    // keeps libuv's timer phase busy on Node 20 and starves I/O and signals (measured: no epoll for seconds).
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.kick(0);
    }, delay);
  }

  private startWriting(): void {
    this.timer = undefined;
    this.immediate = undefined;
    if (this.writing !== undefined) return;
    this.writing = this.writeBatches().finally(() => {
      this.writing = undefined;
      if (this.queue.length + this.sealedCount > 0 && !this.closed) {
        this.kick(this.failures > 0 ? this.backoff() : 0);
      }
    });
  }

  /**
   * Write the batches queued when this turn began, then return to the event loop (the `finally` in
   * startWriting schedules the next turn). Records appended meanwhile wait for that turn: with a store that
   * answers at once, an unbounded loop here would chain microtasks forever and starve timers, I/O and signals.
   */
  private async writeBatches(): Promise<void> {
    let turns = Math.ceil((this.queue.length + this.sealedCount) / this.batchSize);
    while (turns-- > 0 && (this.sealed.length > 0 || this.queue.length > 0)) {
      if (this.sealed.length === 0) this.sealNext();
      const batch = this.sealed[0]!;
      const writing = this.store.append(batch);
      // While the store works (a network round trip for PostgreSQL), seal the next batch: sealing only needs
      // the previous leaf hash, which is known. Commits stay strictly in order.
      if (turns > 0 && this.sealed.length === 1 && this.queue.length > 0) this.sealNext();
      try {
        await writing;
      } catch (e) {
        this.failures++;
        this.options.onError?.(e);
        if (this.closed || this.failures >= 3) this.rejectWaiters(e);
        return;
      }
      this.failures = 0;
      this.sealed.shift();
      this.sealedCount -= batch.length;
      this.committed += batch.length;
      this.resolveWaiters();
      await this.grow(batch);
    }
  }

  /** Add committed leaves to the tree, and sign a checkpoint when one is due. */
  private async grow(batch: readonly SealedRecord[]): Promise<void> {
    const tree = this.tree;
    if (tree === undefined) return;
    for (const r of batch) tree.range.append(Buffer.from(r.leafHash, "hex"));
    const every = this.options.checkpoints?.every ?? 0;
    if (every > 0 && tree.range.size - tree.checkpointed >= every) {
      try {
        await this.checkpoint();
      } catch (e) {
        this.options.onError?.(e); // records are safe; the next checkpoint covers them
      }
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
    this.sealed.push(out);
    this.sealedCount += n;
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
