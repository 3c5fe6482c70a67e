/**
 * Proofs an auditor can check with nothing but the log's public key: a record's inclusion in a signed
 * checkpoint, and the consistency of two checkpoints (the later tree extends the earlier one).
 */
import { OnbehalfError } from "../errors.js";
import { consistencyProof, hasherOver, inclusionProof } from "./merkle.js";
import type { AuditRecord } from "./record.js";
import { recordFromRow } from "./sql.js";
import type { AuditStore, StoredCheckpoint } from "./store.js";

export interface InclusionProof {
  readonly log: string;
  readonly seq: number;
  readonly record: AuditRecord;
  /** The leaf index is seq − 1. */
  readonly leaf_index: number;
  readonly tree_size: number;
  /** Base64 sibling hashes, bottom-up (RFC 9162 §2.1.3). */
  readonly proof: readonly string[];
  /** The signed checkpoint for tree_size: its root is what the proof leads to. */
  readonly checkpoint: string;
}

export interface ConsistencyProof {
  readonly log: string;
  readonly size1: number;
  readonly size2: number;
  readonly proof: readonly string[];
  readonly checkpoint1: string;
  readonly checkpoint2: string;
}

/**
 * Prove that record `seq` of `log` is in the tree of a signed checkpoint: the one of size `size`, or by
 * default the latest.
 *
 * @example
 * const p = await proveInclusion(store, "onbehalf@host-1", 42);
 */
export async function proveInclusion(
  store: AuditStore,
  log: string,
  seq: number,
  size?: number,
): Promise<InclusionProof> {
  if (!Number.isSafeInteger(seq) || seq < 1)
    throw new OnbehalfError("ERR_INVALID_ARGUMENT", "seq must be a positive integer");
  const [row] = await store.rows(log, seq, 1);
  // A record that does not exist is said as such, before any word about checkpoints.
  if (row === undefined || row.seq !== seq)
    throw new OnbehalfError("ERR_NOT_FOUND", `no record ${seq} in log ${log}`);
  const checkpoint = await checkpointAt(store, log, size);
  if (seq > checkpoint.size) {
    throw new OnbehalfError(
      "ERR_INVALID_ARGUMENT",
      `record ${seq} is not covered by the checkpoint of size ${checkpoint.size}` +
        (size === undefined ? ": it is newer than the latest checkpoint; ask again after the next one" : ""),
    );
  }
  const leaves = await leavesUpTo(store, log, checkpoint.size);
  return {
    log,
    seq,
    record: recordFromRow(row.canonical, row.leafHash),
    leaf_index: seq - 1,
    tree_size: checkpoint.size,
    proof: inclusionProof(hasherOver(leaves), seq - 1, checkpoint.size).map((h) => h.toString("base64")),
    checkpoint: checkpoint.note,
  };
}

/**
 * Prove that the checkpoint of size `size2` extends the one of size `size1`.
 *
 * @example
 * const p = await proveConsistency(store, "onbehalf@host-1", 1000, 2000);
 */
export async function proveConsistency(
  store: AuditStore,
  log: string,
  size1: number,
  size2: number,
): Promise<ConsistencyProof> {
  const [c1, c2] = [await checkpointAt(store, log, size1), await checkpointAt(store, log, size2)];
  if (c1.size > c2.size)
    throw new OnbehalfError("ERR_INVALID_ARGUMENT", "the first size must not exceed the second");
  const leaves = await leavesUpTo(store, log, c2.size);
  return {
    log,
    size1: c1.size,
    size2: c2.size,
    proof: consistencyProof(hasherOver(leaves), c1.size, c2.size).map((h) => h.toString("base64")),
    checkpoint1: c1.note,
    checkpoint2: c2.note,
  };
}

async function checkpointAt(
  store: AuditStore,
  log: string,
  size: number | undefined,
): Promise<StoredCheckpoint> {
  if (size === undefined) {
    const latest = await store.latestCheckpoint(log);
    if (latest === null) throw new OnbehalfError("ERR_INVALID_ARGUMENT", `log ${log} has no checkpoint yet`);
    return latest;
  }
  const found = (await store.checkpoints(log)).find((c) => c.size === size);
  if (found === undefined)
    throw new OnbehalfError("ERR_INVALID_ARGUMENT", `log ${log} has no checkpoint of size ${size}`);
  return found;
}

async function leavesUpTo(store: AuditStore, log: string, size: number): Promise<Buffer[]> {
  const leaves: Buffer[] = [];
  for (let from = 1; from <= size; from += 100_000) {
    for (const h of await store.leafHashes(log, from, Math.min(size, from + 99_999)))
      leaves.push(Buffer.from(h, "hex"));
  }
  if (leaves.length !== size) {
    throw new OnbehalfError(
      "ERR_INVALID_ARGUMENT",
      `log ${log} has ${leaves.length} of the ${size} records its checkpoint covers: run audit verify`,
    );
  }
  return leaves;
}
