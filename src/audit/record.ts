/**
 * The audit record (CONTRACT.md), and sealing: giving it a place in its log (`log`, `seq`), linking it to
 * the previous record (`prev_hash`), and hashing it as a Merkle leaf (`leaf_hash` =
 * SHA-256(0x00 ‖ canonical JSON of every other field), RFC 6962 §2.1).
 */
import { hash } from "node:crypto";
import type { ReasonCode, ShadowVerdict, Verdict } from "../decision.js";
import { hasUnsafeText } from "../text.js";
import { canonicalJson, jsonString } from "./canonical.js";

/**
 * `pending`: allowed or asked, its result not reported yet; `none`: denied; `ok`, `error`, `blocked`: what a
 * reported call did; `expired`: an allowed call whose result never came (its wait ran out, or it was evicted at
 * the bound of calls waiting); `unreported`: allowed, and its caller said it would not report (`report: false`).
 */
export type Outcome = "ok" | "error" | "blocked" | "pending" | "none" | "expired" | "unreported";
export type Source = "inproc" | "api" | "mcp" | "spool";
/**
 * `attempt`: a decision; `outcome`: what an executed call did (same call_id); `approval`: a human approved or
 * denied an asked call (same call_id); `delegation`: a token exchange (chain and granted scopes);
 * `admin`: a policy change; `spooled`: a remote client's own account of a call it decided by its fail mode
 * while the control plane was unreachable, replayed through `POST /v1/audit/spool` (never a decision the
 * control plane made: its `decision` and `reason_code` are what the client did).
 */
export type RecordKind = "attempt" | "outcome" | "approval" | "delegation" | "admin" | "spooled";

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
  /**
   * `sha256:<hex>` of the canonical JSON of the run's capability layers (docs/capabilities.md), when the run
   * had any; absent otherwise (records of runs without capabilities are as they always were).
   */
  readonly capabilities?: string;
  /**
   * Per agent of `chain`, the registered client that vouched for it when it was delegated to (`/v1/token` client
   * authentication; null: none did), when any did; absent otherwise (records are then as they always were).
   */
  readonly chain_clients?: readonly (string | null)[];
  /**
   * The canonical JSON of `args`, computed when the call was decided: what the record seals. A tool that
   * changes its arguments object afterwards (or makes it cyclic) changes neither the record nor its digest.
   * Not a record field of its own; without it, `args` is serialized when the record is sealed.
   */
  readonly argsCanonical?: string;
}

/** A sealed record: the CONTRACT.md record plus its place in the hash-linked log. */
export interface AuditRecord extends AuditFields {
  readonly log: string;
  readonly seq: number;
  /** Hex leaf hash of the previous record of this log; 64 zeros for the first. */
  readonly prev_hash: string;
  readonly leaf_hash: string;
}

/** A record sealed into its log, with the exact bytes that were hashed, as stores keep it. */
export interface SealedRecord {
  readonly fields: AuditFields;
  readonly log: string;
  readonly seq: number;
  readonly prevHash: string;
  readonly leafHash: string;
  /** Canonical JSON of the record without `leaf_hash`: the bytes the leaf hash covers. */
  readonly canonical: string;
}

export const GENESIS_HASH = "0".repeat(64);

let stampMs = Number.NaN;
let stamp = "";

/** ISO 8601 UTC with milliseconds, as records carry it (memoized per millisecond: many calls share one). */
export function timestamp(ms: number): string {
  if (ms !== stampMs) {
    stamp = new Date(ms).toISOString();
    stampMs = ms;
  }
  return stamp;
}

/**
 * Seal `fields` as record `seq` of `log`, linked to `prevHash`: canonical bytes and leaf hash.
 *
 * @example
 * const sealed = seal(fields, "onbehalf@host-1", 1, GENESIS_HASH);
 * sealed.leafHash; // 64 hex characters
 */
export function seal(fields: AuditFields, log: string, seq: number, prevHash: string): SealedRecord {
  const canonical = canonicalRecord(fields, log, seq, prevHash);
  return { fields, log, seq, prevHash, leafHash: leafHash(canonical), canonical };
}

/** The identity fields stores keep in columns of their own (text that must be storable as it is). */
const IDENTITY_FIELDS = ["tenant", "user", "email", "agent", "tier", "tool", "trace_id", "call_id"] as const;

/**
 * `fields` as a store can hold them: an identity field (or chain entry) holding a control character or an
 * unpaired surrogate is replaced by `unsafe:sha256:<hex>` of its value, so one poisoned request cannot make a
 * record unstorable (PostgreSQL text holds no NUL) and every record still names what it was about. The edges
 * refuse such input before it is decided; this is the writer's last line. Returns `fields` itself when clean.
 *
 * @example
 * storable({ ...fields, tool: "x\u0000y" }).tool; // "unsafe:sha256:…"
 */
export function storable(fields: AuditFields): AuditFields {
  let out: Record<string, unknown> | undefined;
  for (const key of IDENTITY_FIELDS) {
    const value = fields[key];
    if (value !== null && hasUnsafeText(value)) {
      out ??= { ...fields };
      out[key] = unsafeDigest(value);
    }
  }
  if (fields.chain.some(hasUnsafeText)) {
    out ??= { ...fields };
    out["chain"] = fields.chain.map((a) => (hasUnsafeText(a) ? unsafeDigest(a) : a));
  }
  return (out as AuditFields | undefined) ?? fields;
}

/**
 * What is left of a record the store refused for its content: every text field reduced to printable ASCII
 * (or its digest), the arguments withheld, and why. It keeps its place in the log, its call id and decision.
 */
export function stubFields(fields: AuditFields, why: string): AuditFields {
  const ascii = (v: string | null) => (v === null || /^[\x20-\x7e]*$/.test(v) ? v : unsafeDigest(v));
  const { argsCanonical: _dropped, ...rest } = fields;
  return {
    ...rest,
    tenant: ascii(fields.tenant),
    user: ascii(fields.user),
    email: ascii(fields.email),
    agent: ascii(fields.agent),
    tier: ascii(fields.tier),
    chain: fields.chain.map((a) => ascii(a) ?? ""),
    tool: ascii(fields.tool),
    args: { withheld: "the record could not be stored as it was" },
    reason: `${ascii(why.slice(0, 300))}; stored without its text`,
    rule: ascii(fields.rule),
    trace_id: ascii(fields.trace_id),
    call_id: ascii(fields.call_id) ?? "",
    shadow: null,
  };
}

function unsafeDigest(value: string): string {
  return `unsafe:sha256:${hash("sha256", value, "hex")}`;
}

/** The full record (CONTRACT.md shape) of a sealed one. */
export function recordOf(sealed: SealedRecord): AuditRecord {
  const { argsCanonical: _sealed, ...fields } = sealed.fields;
  return {
    ...fields,
    log: sealed.log,
    seq: sealed.seq,
    prev_hash: sealed.prevHash,
    leaf_hash: sealed.leafHash,
  };
}

/**
 * The canonical JSON (RFC 8785) of a record without `leaf_hash`, written field by field in sorted key order.
 * Equal to `canonicalJson({ ...fields, log, seq, prev_hash })` (a test holds it to that), several times faster:
 * it runs for every record the log writes.
 */
function canonicalRecord(f: AuditFields, log: string, seq: number, prevHash: string): string {
  return (
    `{"agent":${str(f.agent)},"args":${f.argsCanonical ?? canonicalJson(f.args)},"args_digest":${str(f.args_digest)}` +
    `,"call_id":${str(f.call_id)}${f.capabilities === undefined ? "" : `,"capabilities":${str(f.capabilities)}`}` +
    `,"chain":${canonicalJson(f.chain)}` +
    `${f.chain_clients === undefined ? "" : `,"chain_clients":${canonicalJson(f.chain_clients)}`}` +
    `,"decision":${str(f.decision)}` +
    `,"email":${str(f.email)},"kind":${str(f.kind)},"latency_us":${num(f.latency_us)},"log":${str(log)}` +
    `,"outcome":${str(f.outcome)},"prev_hash":${str(prevHash)},"reason":${str(f.reason)}` +
    `,"reason_code":${str(f.reason_code)},"rule":${str(f.rule)},"seq":${num(seq)}` +
    `,"shadow":${f.shadow === null ? "null" : canonicalJson(f.shadow)},"source":${str(f.source)}` +
    `,"tenant":${str(f.tenant)},"tier":${str(f.tier)},"time":${str(f.time)},"tool":${str(f.tool)}` +
    `,"trace_id":${str(f.trace_id)},"user":${str(f.user)}}`
  );
}

function str(value: string | null): string {
  return value === null ? "null" : jsonString(value);
}

function num(value: number): string {
  return Number.isFinite(value) ? JSON.stringify(value) : "null";
}

/** RFC 6962 leaf hash of canonical record bytes, hex. */
export function leafHash(canonical: string): string {
  return hash("sha256", `\u0000${canonical}`, "hex");
}

/**
 * `sha256:<hex>` of the canonical JSON of a run's capability layers, as audit records carry it.
 *
 * @example
 * digestCapabilities(run.capabilities); // "sha256:…"
 */
export function digestCapabilities(layers: unknown): string {
  return `sha256:${hash("sha256", canonicalJson(layers), "hex")}`;
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
