/**
 * The audit record (CONTRACT.md), and sealing: giving it a place in its log (`log`, `seq`), linking it to
 * the previous record (`prev_hash`), and hashing it as a Merkle leaf (`leaf_hash` =
 * SHA-256(0x00 ‖ canonical JSON of every other field), RFC 6962 §2.1).
 */
import { hash } from "node:crypto";
import type { ReasonCode, ShadowVerdict, Verdict } from "../policy/decide.js";
import { canonicalJson } from "./canonical.js";

export type Outcome = "ok" | "error" | "blocked" | "pending" | "none";
export type Source = "inproc" | "api" | "mcp" | "spool";
/** `attempt`: a decision; `outcome`: what an executed call did (same call_id); `admin`: a policy change. */
export type RecordKind = "attempt" | "outcome" | "admin";

/** What the caller provides; sealing adds the rest. */
export interface AuditFields {
  readonly kind: RecordKind;
  /** ISO 8601 UTC with milliseconds. */
  readonly time: string;
  readonly tenant: string | null;
  /** The human's id (issuer-qualified where several issuers are trusted); null when unauthenticated. */
  readonly user: string | null;
  readonly email: string | null;
  readonly agent: string | null;
  readonly tier: string | null;
  readonly chain: readonly string[];
  readonly tool: string | null;
  /** `sha256:<hex>` of the canonical JSON of the full arguments. */
  readonly args_digest: string | null;
  /** The arguments with the tool's redaction paths applied. */
  readonly args: unknown;
  readonly decision: Verdict;
  readonly reason_code: ReasonCode;
  readonly reason: string;
  readonly rule: string | null;
  readonly outcome: Outcome;
  readonly trace_id: string | null;
  readonly call_id: string;
  readonly latency_us: number;
  readonly source: Source;
  /** The verdict shadow mode did not enforce, if any. */
  readonly shadow: ShadowVerdict | null;
}

/** A sealed record: the CONTRACT.md record plus its place in the hash-linked log. */
export interface AuditRecord extends AuditFields {
  readonly log: string;
  readonly seq: number;
  /** Hex leaf hash of the previous record of this log; 64 zeros for the first. */
  readonly prev_hash: string;
  readonly leaf_hash: string;
}

/** A record with the exact bytes that were hashed, as stores keep it. */
export interface SealedRecord {
  readonly record: AuditRecord;
  /** Canonical JSON of the record without `leaf_hash`: the bytes the leaf hash covers. */
  readonly canonical: string;
}

export const GENESIS_HASH = "0".repeat(64);

/**
 * Seal `fields` as record `seq` of `log`, linked to `prevHash`.
 *
 * @example
 * const { record } = seal(fields, "onbehalf/host-1", 1, GENESIS_HASH);
 * record.leaf_hash; // 64 hex characters
 */
export function seal(fields: AuditFields, log: string, seq: number, prevHash: string): SealedRecord {
  const unsealed = { ...fields, log, seq, prev_hash: prevHash };
  const canonical = canonicalJson(unsealed);
  return { record: { ...unsealed, leaf_hash: leafHash(canonical) }, canonical };
}

/** RFC 6962 leaf hash of canonical record bytes, hex. */
export function leafHash(canonical: string): string {
  return hash("sha256", `\u0000${canonical}`, "hex");
}

/** `sha256:<hex>` of the canonical JSON of `args`, and that JSON's length (for the size limit). */
export function digestArgs(args: unknown): { digest: string; bytes: number; canonical: string } {
  const canonical = canonicalJson(args ?? null);
  return {
    digest: `sha256:${hash("sha256", canonical, "hex")}`,
    bytes: Buffer.byteLength(canonical),
    canonical,
  };
}
