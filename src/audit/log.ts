/**
 * The audit log writer. `append()` is synchronous and cheap: it gives the record the next sequence number and
 * queues it. The writer, running between calls, seals queued records in sequence order (canonical bytes, link
 * to the previous record, leaf hash) and writes them by group commit: one transaction per batch, started as
 * soon as a batch is full or `flushMs` after the first record queued. A record is acknowledged when its batch
 * commits; `flush()` and `close()` wait for everything queued.
 *
 * One writer per log: the writer holds a claim on its log id in the store for as long as it runs, renewed by
 * every batch and by a heartbeat, and every batch commits only while the claim is held (fencing). A second
 * writer for the same log id is refused at open with the holder named.
 *
 * What happens when a write fails depends on why (see `StoreFailure`):
 * - the store is unavailable: the batch is kept and retried with backoff; `healthy` is false, so the governor
 *   denies new calls (fail closed) until a write succeeds again;
 * - the store refused a record for its content: the batch is written again one record at a time, and a
 *   record refused on its own is stored as a stub (text reduced, arguments withheld): the log never wedges;
 * - another writer took the log over: the writer stops for good (`healthy` false, every wait rejected).
 *
 * Back-pressure: past `highWater` queued records, `congested` is true and callers wait on `drained()` before
 * deciding more calls, so a tight loop of governed calls gives the writer its turns instead of failing.
 */

import type { KeyObject } from "node:crypto";
import { createPublicKey, randomUUID } from "node:crypto";
import { readFileSync, readlinkSync } from "node:fs";
import { hostname } from "node:os";
import { OnbehalfError } from "../errors.js";
import { signCheckpoint, type TreeHead, verifyCheckpoint } from "./checkpoint.js";
import { type JournalEntry, readJournal, writeJournal } from "./journal.js";
import { CompactRange } from "./merkle.js";
import type { AuditForwarder } from "./otlp.js";
import {
  type AuditFields,
  GENESIS_HASH,
  leafHash,
  type SealedRecord,
  seal,
  storable,
  stubFields,
  timestamp,
} from "./record.js";
import { type AuditStore, failureOf, type LogHolder, type StoredRow, type WriterClaim } from "./store.js";

/** When the writer signs a checkpoint of its log: every `every` records, every `seconds`, and on close. */
export interface CheckpointPolicy {
  /** The Ed25519 key that signs. */
  readonly key: KeyObject;
  /** The name it signs as (in the signature line). Default: the log id. */
  readonly name?: string;
  readonly every: number;
  readonly seconds: number;
}

export interface AuditLogOptions {
  /** This writer's log id (the checkpoint origin). */
  readonly logId: string;
  /**
   * When `logId` is a default rather than configured: if another live writer holds it, take the first free
   * of `<logId>/2` … `<logId>/16` instead of refusing, so several processes on one host each get a log.
   */
  readonly slots?: boolean;
  /** What this writer is, for the error a second writer gets (e.g. "onbehalf serve"). */
  readonly label?: string;
  /** A claim not renewed for this long may be taken over by another writer. Default 20 s. */
  readonly staleMs?: number;
  readonly batchSize?: number;
  readonly flushMs?: number;
  /** Queued records past which callers wait for the writer (`congested`). Default 4 batches, at least 2048. */
  readonly highWater?: number;
  /** Records kept while the store is down; beyond it appends fail (and the governor denies). */
  readonly maxQueue?: number;
  /** How long `acknowledged()` waits for a commit before it gives up (ms). Default 5000. */
  readonly ackTimeoutMs?: number;
  readonly onError?: (error: unknown) => void;
  /** Sign checkpoints of the Merkle tree over this log. */
  readonly checkpoints?: CheckpointPolicy;
  /**
   * Sign records found after the last checkpoint even when nothing shows a crash left them (the operator
   * checked them). Default false: such records are refused (see `resumeTree`).
   */
  readonly acceptUnsignedTail?: boolean;
  /**
   * The writer's journal directory, on its own disk (see journal.ts): where a clean stop is recorded out of
   * the database's reach. Default: none (the store's claim rows alone tell a crash from a clean stop).
   */
  readonly journal?: string;
  /** Where committed records go besides the store (OTLP, say): told after each commit, never waited for. */
  readonly forward?: AuditForwarder;
}

const MAX_SLOTS = 16;
/** How long a store may stay busy (locked by another process) before that counts as failing. */
const BUSY_GRACE_MS = 5_000;
const BUSY_RETRY_MS = 25;

/**
 * Claim a log on `store` and open its writer, continuing after the last stored record.
 *
 * @example
 * const log = await openAuditLog(store, { logId: "onbehalf@host-1" });
 * log.append(fields); await log.close();
 */
export async function openAuditLog(store: AuditStore, options: AuditLogOptions): Promise<AuditLog> {
  await store.init();
  const claim = writerClaim(options.label ?? "an onbehalf audit writer");
  const staleMs = options.staleMs ?? 20_000;
  const { log: logId, previous } = await claimLog(store, options, claim, staleMs);
  try {
    const head = await store.head(logId);
    const size = head?.seq ?? 0;
    const stopped = options.journal === undefined ? null : readJournal(options.journal, logId);
    const tree =
      options.checkpoints === undefined
        ? undefined
        : await resumeTree(
            store,
            logId,
            size,
            options,
            previous,
            stopped?.state === "closed" ? stopped : null,
          );
    const log = new AuditLog(store, { ...options, logId }, claim.holder, staleMs, size, head, tree);
    log.journalOpen();
    log.startTimers();
    return log;
  } catch (e) {
    await store.release(logId, claim.holder).catch(() => {});
    throw e;
  }
}

function writerClaim(label: string): WriterClaim {
  const host = localHost();
  return {
    holder: `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`,
    host,
    pid: process.pid,
    label,
  };
}

let local: string | undefined;
/**
 * Where this process's pids mean something: the hostname, and on Linux the boot and the pid namespace, so a
 * process in another container with the same hostname (host networking) is never mistaken for one of ours.
 */
export function localHost(): string {
  if (local !== undefined) return local;
  local = hostname();
  try {
    const boot = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim().slice(0, 8);
    const pidns = /\[(\d+)\]/.exec(readlinkSync("/proc/self/ns/pid"))?.[1];
    if (boot !== "" && pidns !== undefined) local = `${local} (boot ${boot}, pid-ns ${pidns})`;
  } catch {
    // not Linux: the hostname alone
  }
  return local;
}

/** A holder in this host's pid space whose process no longer runs has gone (a kill -9): taken at once. */
function gone(holder: LogHolder): boolean {
  if (holder.host !== localHost()) return false;
  try {
    process.kill(holder.pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "ESRCH";
  }
}

async function claimLog(
  store: AuditStore,
  options: AuditLogOptions,
  claim: WriterClaim,
  staleMs: number,
): Promise<{ log: string; previous: LogHolder | null }> {
  const candidates = [options.logId];
  if (options.slots === true) for (let n = 2; n <= MAX_SLOTS; n++) candidates.push(`${options.logId}/${n}`);
  let refused: { log: string; holder: LogHolder } | undefined;
  for (const log of candidates) {
    const result = await store.claim(log, claim, { staleMs, gone });
    if ("previous" in result) return { log, previous: result.previous };
    refused ??= { log, holder: result.refused };
  }
  const { log, holder } = refused!;
  const fix =
    options.slots === true
      ? `all ${MAX_SLOTS} logs of this host are held: set audit.log_id for each instance`
      : "give each instance its own audit.log_id (or leave it unset: each process then takes a log of its own), or stop the other writer";
  throw new OnbehalfError(
    "ERR_CONFLICT",
    `audit log ${log} is being written by another writer: ${holder.label} (host ${holder.host}, pid ${holder.pid}, since ${holder.since}, last seen ${Math.round(holder.idleMs / 1000)} s ago). One log takes one writer, or their records would collide: ${fix}. A writer that stopped without releasing its claim is taken over ${staleMs / 1000} s after it was last seen (at once when it ran on this host).`,
    { details: { log, holder } },
  );
}

/** Records a writer resumes over, left unsigned by a writer that stopped without signing them. */
export interface ResumedTail {
  readonly from: number;
  readonly to: number;
  /** The writer that wrote them and stopped without releasing its claim (a crash), or null. */
  readonly previous: LogHolder | null;
}

/**
 * The log's Merkle tree at `size`, resumed from the latest checkpoint, which must verify with this writer's
 * own key and agree with the stored state the writer resumes from; then every record after it, each
 * recomputed (leaf hash, place, link to the one before). A writer never signs what it cannot prove extends
 * its last signed checkpoint:
 * - a checkpoint beyond the stored records means records were removed;
 * - records after the last checkpoint are signed only when the writer before stopped without signing them (a
 *   crash: it left its claim behind) and they are no more than a crash can leave; after a clean stop (which
 *   signs everything it wrote) they were written by something else, and the writer refuses to start, unless
 *   `acceptUnsignedTail` says the operator checked them.
 */
async function resumeTree(
  store: AuditStore,
  logId: string,
  size: number,
  options: AuditLogOptions,
  previous: LogHolder | null,
  stopped: (JournalEntry & { state: "closed" }) | null,
): Promise<{ range: CompactRange; checkpointed: number; resumed: ResumedTail | null }> {
  const policy = options.checkpoints!;
  const refuse = (why: string) =>
    new OnbehalfError("ERR_AUDIT_UNAVAILABLE", `audit log ${logId}: ${why}; run \`onbehalf audit verify\``);
  const latest = await store.latestCheckpoint(logId);
  if (latest !== null && latest.size > size) {
    throw refuse(`it has a checkpoint at size ${latest.size} but only ${size} records: records were removed`);
  }
  const crashed = await crashedWriter(
    store,
    logId,
    size,
    latest?.size ?? 0,
    options,
    previous,
    stopped,
    refuse,
  );
  let range = new CompactRange();
  if (latest !== null) {
    let head: TreeHead;
    try {
      head = verifyCheckpoint(latest.note, [createPublicKey(policy.key)]);
    } catch (e) {
      throw refuse(
        `its latest checkpoint (size ${latest.size}) does not verify with this writer's key (${messageOf(e)})`,
      );
    }
    range = new CompactRange(
      latest.size,
      latest.subtrees.map((h) => Buffer.from(h, "hex")),
    );
    if (
      head.origin !== logId ||
      head.size !== latest.size ||
      !head.root.equals(range.root()) ||
      latest.root !== head.root.toString("hex")
    ) {
      throw refuse(
        `the stored state of its tree at size ${latest.size} does not match the root its checkpoint signs`,
      );
    }
  }
  const from = range.size + 1;
  if (size < from) return { range, checkpointed: latest?.size ?? 0, resumed: null };
  const tail = size - range.size;
  const most = Math.max(policy.every, 0) + 2 * (options.batchSize ?? 512);
  if (options.acceptUnsignedTail !== true && (crashed === null || tail > most)) {
    throw refuse(
      `${tail} records (seq ${from} to ${size}) follow its last signed checkpoint, ` +
        (crashed === null
          ? "yet its last writer stopped cleanly, which signs everything it wrote: something else wrote them"
          : `more than a writer that crashed can leave (${most})`) +
        ". If they are genuine, start once with audit.resume_unsigned_tail: true to sign them",
    );
  }
  // Every record after the signed root is recomputed: its leaf hash, its place, its link to the one before.
  let prev = GENESIS_HASH;
  if (range.size > 0) {
    const [row] = await store.rows(logId, range.size, 1);
    if (row === undefined || row.seq !== range.size || leafHash(row.canonical) !== row.leafHash) {
      throw refuse(`record ${range.size}, the last one its checkpoint signs, does not match its leaf hash`);
    }
    prev = row.leafHash;
  }
  for (let next = from; next <= size; ) {
    const rows = await store.rows(logId, next, 10_000);
    if (rows.length === 0) break;
    for (const row of rows) {
      const bad = tailProblem(row, logId, next, prev);
      if (bad !== null) throw refuse(`record ${next} after its last checkpoint ${bad}`);
      range.append(Buffer.from(row.leafHash, "hex"));
      prev = row.leafHash;
      next++;
    }
  }
  if (range.size !== size) throw refuse(`records ${range.size + 1} to ${size} are missing`);
  return { range, checkpointed: latest?.size ?? 0, resumed: { from, to: size, previous: crashed } };
}

/**
 * The writer that left unsigned records behind by crashing, as far as anything shows: the claim it left in the
 * store, unless this host's journal says the log's last writer here stopped cleanly, in the store it
 * describes, and nobody signed since. (A claim row is only a row: whoever can write the database can leave
 * one; only the key signs.)
 */
async function crashedWriter(
  store: AuditStore,
  logId: string,
  size: number,
  checkpointed: number,
  options: AuditLogOptions,
  previous: LogHolder | null,
  stopped: (JournalEntry & { state: "closed" }) | null,
  refuse: (why: string) => OnbehalfError,
): Promise<LogHolder | null> {
  if (stopped === null || stopped.size === 0) return previous;
  const [row] = size < stopped.size ? [] : await store.rows(logId, stopped.size, 1);
  const journal = options.journal === undefined ? "" : ` (journal ${options.journal})`;
  if (row === undefined) return previous; // fewer records than it signed: another store (a new database, say)
  if (row.seq !== stopped.size || row.leafHash !== stopped.leaf) {
    if (options.acceptUnsignedTail === true) return previous;
    throw refuse(
      `record ${stopped.size} is not the one its last writer on this host signed when it stopped cleanly at ${stopped.at}${journal}: it was rewritten (if this is another database for the same log id, give it its own audit.log_id)`,
    );
  }
  // A writer elsewhere signed more since (the log moved to another host, and it may have crashed there): the
  // journal no longer describes the log's last stop.
  if (checkpointed > stopped.size) return previous;
  if (checkpointed < stopped.size) {
    throw refuse(
      `its last writer on this host stopped cleanly at ${stopped.at} and signed ${stopped.size} records${journal}, but the latest checkpoint left signs ${checkpointed}: checkpoints were removed`,
    );
  }
  return null;
}

function tailProblem(row: StoredRow, log: string, seq: number, prev: string): string | null {
  if (row.seq !== seq) return "is missing";
  let record: { seq?: unknown; log?: unknown; prev_hash?: unknown };
  try {
    record = JSON.parse(row.canonical) as typeof record;
  } catch {
    return "is not valid JSON";
  }
  if (record.seq !== seq || record.log !== log) return "holds another record";
  if (leafHash(row.canonical) !== row.leafHash) return "does not match its leaf hash";
  if (record.prev_hash !== prev) return "does not link to the record before it";
  return null;
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
  /** Records the store refused for their content, stored as stubs. */
  stubbed = 0;
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
  private drainWaiters: (() => void)[] = [];
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private writing: Promise<void> | undefined;
  /** Consecutive failed writes (the store unavailable), and the last error. */
  private failures = 0;
  private lastError: unknown;
  /** Set when another writer took the log over: nothing more is written. */
  private lost: OnbehalfError | undefined;
  /** Since when the store has answered "busy" (its write lock held by another process). */
  private busySince: number | undefined;
  private busyRetry: NodeJS.Timeout | undefined;
  /** Records still to be written one at a time, after the store refused a batch for its content. */
  private isolating = 0;
  /** Stubs made of refused records (a stub refused again is a store problem, not a content one). */
  private readonly stubs = new WeakSet<AuditFields>();
  private closed = false;
  private readonly batchSize: number;
  private readonly flushMs: number;
  private readonly highWater: number;
  private readonly maxQueue: number;
  private readonly ackTimeoutMs: number;
  private checkpointTimer: NodeJS.Timeout | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private lastHash: string;

  constructor(
    private readonly store: AuditStore,
    private readonly options: AuditLogOptions,
    /** This writer's claim on the log. */
    private readonly holder: string,
    private readonly staleMs: number,
    private seq: number,
    head: { readonly leafHash: string } | null,
    /** The Merkle tree over committed records, the size of the last signed checkpoint, what was resumed. */
    private readonly tree?: { range: CompactRange; checkpointed: number; resumed: ResumedTail | null },
  ) {
    this.logId = options.logId;
    this.lastHash = head?.leafHash ?? GENESIS_HASH;
    this.batchSize = options.batchSize ?? 512;
    this.flushMs = options.flushMs ?? 5;
    this.highWater = options.highWater ?? Math.max(2048, 4 * this.batchSize);
    this.maxQueue = Math.max(options.maxQueue ?? 100_000, 2 * this.highWater);
    this.ackTimeoutMs = options.ackTimeoutMs ?? 5_000;
  }

  /** False after a failed write until a write succeeds, and for good once the log was lost to another writer. */
  get healthy(): boolean {
    return this.failures === 0 && this.lost === undefined;
  }

  /** Why the log is not healthy (the store's error), or null. */
  get problem(): string | null {
    if (this.lost !== undefined) return this.lost.message;
    if (this.failures === 0) return null;
    return `the audit store is not accepting writes: ${messageOf(this.lastError)}`;
  }

  /** Where committed records are forwarded (`audit.otlp`), with its counts; undefined when nowhere. */
  get forwarder(): AuditForwarder | undefined {
    return this.options.forward;
  }

  /** Hand committed records to the forwarder; its trouble is never the writer's. */
  private forward(batch: readonly SealedRecord[]): void {
    try {
      this.options.forward?.push(batch);
    } catch (e) {
      this.options.onError?.(e);
    }
  }

  /** The last sequence number handed out. */
  get lastSeq(): number {
    return this.seq;
  }

  /** Records queued or being written. */
  get backlog(): number {
    return this.queue.length + this.sealedCount;
  }

  /**
   * True while the writer is behind by more than `highWater` records on a healthy store: callers should wait
   * for {@link AuditLog.drained} before deciding more calls. (On a failing store they are denied instead.)
   */
  get congested(): boolean {
    return this.backlog >= this.highWater && this.healthy && !this.closed;
  }

  /** Resolves once the backlog is down to half the high-water mark, or the log stops being healthy. */
  drained(): Promise<void> {
    if (!this.congested) return Promise.resolve();
    this.kick(0);
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /** Queue a record; returns its sequence number. Never blocks on the store. */
  append(fields: AuditFields): number {
    if (this.closed) throw new OnbehalfError("ERR_CLOSED", "the audit log is closed");
    if (this.backlog >= this.maxQueue) {
      this.dropped++;
      throw new OnbehalfError(
        "ERR_AUDIT_UNAVAILABLE",
        `the audit queue is full (${this.backlog} records waiting): ${this.problem ?? "the writer cannot keep up"}`,
      );
    }
    const seq = ++this.seq;
    // While the store is away, records wait in memory: keep them small (no arguments, their digest stays), so
    // a flood of calls during an outage cannot run the process out of memory.
    this.queue.push({ fields: this.healthy ? fields : withoutArgs(fields), seq });
    this.kick(this.queue.length >= this.batchSize ? 0 : this.flushMs);
    return seq;
  }

  /** Append and wait until the record has committed (durability `sync`). */
  appendDurable(fields: AuditFields): Promise<number> {
    const seq = this.append(fields);
    this.kick(0);
    return this.acknowledged(seq).then(() => seq);
  }

  /**
   * Resolves when every record up to `seq` has committed; rejects when the store keeps failing (three
   * attempts), when it has not committed within `timeoutMs` (default `ackTimeoutMs`, 5 s: a store that hangs
   * is a failure, not a wait), or at once when the log was lost to another writer.
   */
  acknowledged(seq: number, timeoutMs: number = this.ackTimeoutMs): Promise<void> {
    const waiting = this.waitFor(seq);
    if (!Number.isFinite(timeoutMs)) return waiting;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new OnbehalfError(
              "ERR_AUDIT_UNAVAILABLE",
              `the audit store did not commit the record within ${timeoutMs / 1000} s${this.problem === null ? "" : `: ${this.problem}`}`,
            ),
          ),
        timeoutMs,
      );
    });
    return Promise.race([waiting, late]).finally(() => clearTimeout(timer));
  }

  /** Write everything queued now; resolves when it has committed (no time limit: shutdown waits for it). */
  async flush(): Promise<void> {
    await this.waitFor(this.seq);
  }

  private waitFor(seq: number): Promise<void> {
    if (this.committedSeq() >= seq) return Promise.resolve();
    if (this.lost !== undefined) return Promise.reject(this.lost);
    if (this.failures === 0) this.kick(0);
    return new Promise((resolve, reject) => this.waiters.push({ upTo: seq, resolve, reject }));
  }

  /** Records after the last checkpoint this writer found at open and resumed over (checked), or null. */
  get resumed(): ResumedTail | null {
    return this.tree?.resumed ?? null;
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
    if (this.lost !== undefined) return;
    const size = tree.range.size;
    const root = tree.range.root();
    await this.store.putCheckpoint({
      log: this.logId,
      size,
      root: root.toString("hex"),
      note: signCheckpoint({ origin: this.logId, size, root }, policy.name ?? this.logId, policy.key),
      time: timestamp(Date.now()),
      subtrees: tree.range.subtrees.map((h) => h.toString("hex")),
    });
    tree.checkpointed = Math.max(tree.checkpointed, size);
  }

  /** @internal Called once by openAuditLog: periodic checkpoints, and the heartbeat that keeps the claim. */
  startTimers(): void {
    const seconds = this.options.checkpoints?.seconds;
    if (seconds !== undefined && seconds > 0) {
      this.checkpointTimer = setInterval(() => {
        if (this.writing === undefined) this.checkpoint().catch((e: unknown) => this.options.onError?.(e));
      }, seconds * 1000);
      this.checkpointTimer.unref();
    }
    this.heartbeat = setInterval(() => {
      this.store.renew(this.logId, this.holder).then(
        (held) => {
          if (!held) this.lose(new Error("its claim was renewed by nobody and taken over"));
        },
        () => {}, // the store being down is reported by the writes
      );
    }, this.staleMs / 4);
    this.heartbeat.unref();
  }

  /** Record in the journal that this writer holds the log (a stop that does not say otherwise is a crash). */
  journalOpen(): void {
    this.journal({ state: "open", log: this.logId, since: new Date().toISOString() });
  }

  private journal(entry: JournalEntry): void {
    const dir = this.options.journal;
    if (dir === undefined) return;
    try {
      writeJournal(dir, entry);
    } catch (e) {
      this.options.onError?.(
        new Error(
          `cannot write the audit journal ${dir} (${messageOf(e)}): without it, a crash and a clean stop are told apart by the store's rows alone; set audit.journal to a writable directory on this host`,
        ),
      );
    }
  }

  /** Flush, sign a final checkpoint, release the log, and stop. Further appends throw `ERR_CLOSED`. */
  async close(): Promise<void> {
    if (this.checkpointTimer) clearInterval(this.checkpointTimer);
    if (this.heartbeat) clearInterval(this.heartbeat);
    let signed = false;
    try {
      await this.flush();
      await this.checkpoint();
      signed = true;
    } finally {
      await this.options.forward?.close().catch(() => {});
      this.closed = true;
      if (this.timer) clearTimeout(this.timer);
      if (this.busyRetry) clearTimeout(this.busyRetry);
      if (this.immediate) clearImmediate(this.immediate);
      this.timer = undefined;
      this.immediate = undefined;
      const failed = new OnbehalfError("ERR_CLOSED", "the audit log closed before this record was written");
      for (const w of this.waiters.splice(0)) w.reject(failed);
      this.resolveDrained();
      // Released only once everything it wrote is signed: a claim left behind tells the next writer that
      // unsigned records it finds were left by a writer that stopped (see resumeTree), not by someone else.
      if (this.lost === undefined && signed) {
        this.journal({
          state: "closed",
          log: this.logId,
          size: this.seq,
          leaf: this.seq === 0 ? "" : this.lastHash,
          at: new Date().toISOString(),
        });
        await this.store.release(this.logId, this.holder).catch(() => {});
      }
    }
  }

  private committedSeq(): number {
    const first = this.sealed[0]?.[0] ?? this.queue[0];
    return first === undefined ? this.seq : first.seq - 1;
  }

  private kick(delay: number): void {
    if (this.writing !== undefined || this.lost !== undefined) return; // a running write re-kicks when done
    if (this.failures > 0) delay = Math.max(delay, this.backoff()); // a failing store is retried with backoff
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
      if (this.writing === undefined) this.immediate ??= setImmediate(() => this.startWriting());
    }, delay);
  }

  private startWriting(): void {
    this.timer = undefined;
    this.immediate = undefined;
    if (this.writing !== undefined) return;
    this.writing = this.writeBatches().finally(() => {
      this.writing = undefined;
      if (this.backlog > 0 && !this.closed && this.lost === undefined && this.busyRetry === undefined) {
        this.kick(this.failures > 0 ? this.backoff() : 0);
      }
    });
  }

  /**
   * Write the records queued when this turn began, then return to the event loop (the `finally` in
   * startWriting schedules the next turn). Records appended meanwhile wait for that turn: with a store that
   * answers at once, an unbounded loop here would chain microtasks forever and starve timers, I/O and signals.
   */
  private async writeBatches(): Promise<void> {
    let budget = this.backlog;
    // A pipelined store (the writer thread) takes the next batch while this one commits: it is sent as soon as
    // it is sealed, and the store refuses it (`gap`) should this one fail. Otherwise it waits, sealed.
    let ahead: Promise<void> | undefined;
    while (budget > 0 && this.backlog > 0 && this.lost === undefined) {
      if (this.sealed.length === 0) this.sealNext();
      const batch = this.sealed[0]!;
      const writing = ahead ?? this.store.append(batch, this.holder);
      ahead = undefined;
      // While the store works (a network round trip for PostgreSQL), seal the next batch: sealing only needs
      // the previous leaf hash, which is known. Commits stay strictly in order.
      if (
        budget > batch.length &&
        this.sealed.length === 1 &&
        this.queue.length > 0 &&
        this.isolating === 0
      ) {
        this.sealNext();
        if (this.store.pipelined === true) {
          ahead = this.store.append(this.sealed[1]!, this.holder);
          ahead.catch(() => {}); // its failure is read when its turn comes (or it follows a failed batch)
        }
      }
      try {
        await writing;
      } catch (e) {
        if (!(await this.recover(batch, e))) return;
      }
      budget -= batch.length;
      this.failures = 0;
      this.busySince = undefined;
      this.sealed.shift();
      this.sealedCount -= batch.length;
      this.committed += batch.length;
      this.forward(batch);
      this.resolveWaiters();
      await this.grow(batch);
    }
  }

  /**
   * A write failed: decide from the store's answer what to do. Returns true when the batch turned out to be
   * committed after all (a retry after a lost acknowledgement), false when the turn ends here.
   */
  private async recover(batch: readonly SealedRecord[], e: unknown): Promise<boolean> {
    const failure = failureOf(e);
    if (failure === "busy") {
      // Another process holds the write lock (a shared SQLite file): try again shortly, without counting it as
      // the store failing, for up to BUSY_GRACE_MS; beyond that it is a failure like any other.
      this.busySince ??= Date.now();
      if (Date.now() - this.busySince < BUSY_GRACE_MS) {
        this.busyRetry ??= setTimeout(() => {
          this.busyRetry = undefined;
          this.kick(0);
        }, BUSY_RETRY_MS);
        return false;
      }
    }
    if (failure === "conflict") {
      // A write whose acknowledgement was lost (a timeout after the commit) conflicts with itself on retry, and
      // with a pipelined store the batch sent behind it may have committed too: the batch is committed if its
      // last record is stored as sealed here (its leaf hash covers the chain before it).
      const last = batch[batch.length - 1]!;
      const stored = await this.store.leafHashes(this.logId, last.seq, last.seq).catch(() => null);
      if (stored?.[0] === last.leafHash) return true;
      if (stored !== null) {
        this.lose(e);
        return false;
      }
      // the store could not say: a failed write like any other, tried again (and checked again) with backoff
    }
    if (failure === "rejected" && !(batch.length === 1 && this.stubs.has(batch[0]!.fields))) {
      this.options.onError?.(e);
      this.unseal();
      if (batch.length === 1) {
        // Refused on its own: store what can be stored of it, in its place.
        const q = this.queue[0]!;
        const stub = stubFields(q.fields, `the audit store refused this record as it was (${messageOf(e)})`);
        this.stubs.add(stub);
        this.queue[0] = { fields: stub, seq: q.seq };
        this.stubbed++;
      } else {
        this.isolating = batch.length; // find the record the store refuses: write these one at a time
      }
      this.kick(0);
      return false;
    }
    this.failures++;
    this.lastError = e;
    this.options.onError?.(e);
    if (this.closed || this.failures >= 3) this.rejectWaiters(e);
    this.resolveDrained(); // waiting callers re-check and are denied while the store is down
    return false;
  }

  /** Stop for good: another writer holds the log now. */
  private lose(e: unknown): void {
    if (this.lost !== undefined) return;
    this.lost = new OnbehalfError(
      "ERR_AUDIT_UNAVAILABLE",
      `audit log ${this.logId} was taken over by another writer (${messageOf(e)}): this instance writes no more records and denies every call; restart it, with an audit.log_id of its own if two instances shared one`,
      { cause: e },
    );
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.options.onError?.(this.lost);
    this.rejectWaiters(this.lost);
    this.resolveDrained();
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

  /** Seal the next batch in sequence order, advancing the chain (one record at a time while isolating). */
  private sealNext(): void {
    const n = Math.min(this.isolating > 0 ? 1 : this.batchSize, this.queue.length);
    if (this.isolating > 0) this.isolating--;
    const next = this.queue.splice(0, n);
    const out: SealedRecord[] = new Array(n);
    let prev = this.lastHash;
    for (let i = 0; i < n; i++) {
      const q = next[i]!;
      let s: SealedRecord;
      try {
        s = seal(storable(q.fields), this.logId, q.seq, prev);
      } catch (e) {
        // Fields that cannot be serialized (an object a caller made cyclic, say) must not stop the writer: the
        // record keeps its place, its call id and decision, without the text that cannot be written.
        this.stubbed++;
        s = seal(
          stubFields(q.fields, `the record could not be serialized (${messageOf(e)})`),
          this.logId,
          q.seq,
          prev,
        );
      }
      out[i] = s;
      prev = s.leafHash;
    }
    this.lastHash = prev;
    this.sealed.push(out);
    this.sealedCount += n;
  }

  /** Put every sealed, uncommitted record back in the queue (to be sealed again), rewinding the chain. */
  private unseal(): void {
    const records = this.sealed.flat();
    if (records.length === 0) return;
    this.lastHash = records[0]!.prevHash;
    this.queue.unshift(...records.map((s) => ({ fields: s.fields, seq: s.seq })));
    this.sealed = [];
    this.sealedCount = 0;
  }

  private backoff(): number {
    return Math.min(5_000, 50 * 2 ** Math.min(this.failures, 7));
  }

  private resolveWaiters(): void {
    if (this.backlog < this.highWater / 2) this.resolveDrained();
    if (this.waiters.length === 0) return;
    const done = this.committedSeq();
    const still: Waiter[] = [];
    for (const w of this.waiters) {
      if (w.upTo <= done) w.resolve();
      else still.push(w);
    }
    this.waiters = still;
  }

  private resolveDrained(): void {
    for (const resolve of this.drainWaiters.splice(0)) resolve();
  }

  private rejectWaiters(e: unknown): void {
    const error =
      e instanceof OnbehalfError
        ? e
        : new OnbehalfError("ERR_AUDIT_UNAVAILABLE", `audit write failed: ${messageOf(e)}`, { cause: e });
    for (const w of this.waiters.splice(0)) w.reject(error);
  }
}

const OUTAGE_ARGS = { omitted: "not kept: the audit store was unavailable when the call was decided" };

function withoutArgs(fields: AuditFields): AuditFields {
  if (fields.args === null) return fields;
  const { argsCanonical: _dropped, ...rest } = fields;
  return { ...rest, args: OUTAGE_ARGS };
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
