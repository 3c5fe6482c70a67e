/**
 * `POST /v1/audit/spool`: records a remote client wrote to its local spool while it could not reach the
 * control plane (it acted on the tenant's fail mode), replayed now. A spooled record is the client's account of
 * what it did, stored as exactly that (`kind: spooled`, `source: spool`), never as a decision of the control
 * plane, and nothing in it is taken on trust:
 *
 * - the human and the tenant come from the bearer; with a delegation token, so do the chain and the tier (signed);
 * - `allow`/`fail_open` from a tenant whose fail mode is not `fail_open` is still stored (the call ran), flagged
 *   as a client override: `rule: client_override`, said in the reason, counted in a metric;
 * - arguments over `limits.max_args_bytes` are stored as their size only (`args_digest` covers them whole), the
 *   others with the tool's redaction paths applied;
 * - a record is refused, on its own, when it does not validate, when its time is in the future or implausibly
 *   old, when its UUIDv7 call id was made at another time than the record says, or when its call id is already
 *   in the audit for something else. The same record sent again is a duplicate (the client deletes its spool
 *   only once answered). Refusals are answered per record, with why, and audited.
 */
import type { FastifyInstance } from "fastify";
import { z } from "zod";
import { callIdMillis, newCallId } from "../audit/call-id.js";
import { type AuditRecord, digestArgs } from "../audit/record.js";
import { safeText, ToolArgs } from "../config/fields.js";
import { Tier } from "../config/policy.js";
import { OnbehalfError } from "../errors.js";
import { auditedArgs } from "../govern/pipeline.js";
import { issuerRefusal } from "../policy/decide.js";
import { escapeUnsafeText } from "../text.js";
import type { ServerContext } from "./context.js";
import { authenticate, type Caller, describeIssues, parseBody } from "./http.js";

const MAX_RECORDS = 1000;
/** How far ahead of this server's clock a client's clock may run. */
const MAX_CLOCK_SKEW_MS = 5 * 60_000;
/** The oldest record accepted: an outage (and the token its records are replayed under) lasts less. */
const MAX_AGE_MS = 7 * 24 * 60 * 60_000;
/** How far a UUIDv7 call id's embedded time may be from the record's `time` (clock skew, slow answers). */
const CALL_ID_WINDOW_MS = 5 * 60_000;
/** The `rule` of a record the client allowed fail-open in a tenant that does not fail open. */
const CLIENT_OVERRIDE = "client_override";

const SpooledRecord = z
  .strictObject({
    call_id: safeText(100).min(8),
    time: z.string().datetime({ offset: true }),
    tool: safeText(),
    args: ToolArgs.optional(),
    agent: safeText(),
    tier: Tier.optional(),
    chain: z.array(safeText()).max(32).default([]),
    decision: z.enum(["allow", "deny"]),
    reason_code: z.enum(["fail_open", "fail_closed"]),
    reason: z.string().max(2000).default(""),
    outcome: z.enum(["ok", "error", "none"]),
    latency_us: z.number().int().min(0).default(0),
    trace_id: safeText().nullable().default(null),
  })
  .superRefine((r, ctx) => {
    const expected = r.decision === "allow" ? "fail_open" : "fail_closed";
    if (r.reason_code !== expected) {
      ctx.addIssue({
        code: "custom",
        path: ["reason_code"],
        message: `a spooled ${r.decision} is ${expected}, not ${r.reason_code}`,
      });
    }
    if (r.decision === "deny" && r.outcome !== "none") {
      ctx.addIssue({
        code: "custom",
        path: ["outcome"],
        message: "a denied call did not run: outcome is none",
      });
    }
  });
type SpooledRecord = z.infer<typeof SpooledRecord>;

const SpoolBody = z.strictObject({ records: z.array(z.unknown()).max(MAX_RECORDS) });

/** Why a record was refused; a fixed set (metric labels, and what clients may match on). */
export type SpoolRefusalCode =
  | "invalid"
  | "time_in_future"
  | "time_too_old"
  | "call_id_time_mismatch"
  | "call_id_taken"
  | "tenant_mismatch";

/** One refused record of a batch, in the answer. */
export interface SpoolRefusal {
  /** Its position in `records`. */
  readonly index: number;
  readonly call_id: string | null;
  readonly code: SpoolRefusalCode;
  readonly reason: string;
}

/** The audit record of a refusal (recorded by the route: a batch audits a bounded number of refusals). */
type RefusalEvent = Parameters<ServerContext["gov"]["recordEvent"]>[0];

type Replayed =
  | { readonly result: "stored"; readonly override: boolean }
  | { readonly result: "duplicate" }
  | {
      readonly result: "refused";
      readonly code: SpoolRefusalCode;
      readonly reason: string;
      readonly event: RefusalEvent;
    };

/**
 * Refusals audited one by one in a batch; past that, one record counts the rest by code. (A batch may hold a
 * thousand records: refused, they must not become a thousand records of their own.) The answer lists them all.
 */
const MAX_AUDITED_REFUSALS = 20;

export function spoolRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const counted = ctx.metrics.counter(
    "onbehalf_spool_records_total",
    "Spooled records replayed by clients, by result (stored, duplicate, or the refusal code).",
    ["result"],
  );
  const overrides = ctx.metrics.counter(
    "onbehalf_spool_client_overrides_total",
    "Spooled records a client allowed fail-open in a tenant whose fail mode is not fail_open (stored, flagged).",
  );

  app.post("/v1/audit/spool", async (req) => {
    const caller = await authenticate(ctx.gov, ctx.issuer, req);
    const { records } = parseBody(SpoolBody, req.body);
    // Nothing is claimed or half-stored while the audit cannot take it: the client keeps its spool and retries.
    if (!ctx.gov.auditLog.healthy) {
      throw new OnbehalfError(
        "ERR_AUDIT_UNAVAILABLE",
        "the audit store is unavailable: replay the spool later",
      );
    }
    let accepted = 0;
    let duplicates = 0;
    let flagged = 0;
    const refused: SpoolRefusal[] = [];
    for (const [index, raw] of records.entries()) {
      const r = await replay(ctx, caller, raw);
      if (r.result === "stored") {
        accepted++;
        counted({ result: "stored" });
        if (r.override) {
          flagged++;
          overrides({});
        }
      } else if (r.result === "duplicate") {
        duplicates++;
        counted({ result: "duplicate" });
      } else {
        if (refused.length < MAX_AUDITED_REFUSALS) ctx.gov.recordEvent(r.event);
        refused.push({ index, call_id: callIdOf(raw), code: r.code, reason: r.reason });
        counted({ result: r.code });
      }
    }
    if (refused.length > MAX_AUDITED_REFUSALS) ctx.gov.recordEvent(moreRefused(ctx, caller, refused));
    // The client deletes its spool on this answer: what it says is stored has committed first.
    if (accepted > 0 || refused.length > 0) await ctx.gov.flush();
    return { accepted, duplicates, overrides: flagged, refused };
  });
}

/** Check one record and store it, or say why not (a refusal is audited too). */
async function replay(ctx: ServerContext, caller: Caller, raw: unknown): Promise<Replayed> {
  const parsed = SpooledRecord.safeParse(raw);
  if (!parsed.success)
    return refuse(ctx, caller, raw, null, "invalid", describeIssues(parsed.error, "record"));
  const r = parsed.data;
  // Only a token whose issuer may vouch for its tenant writes anything in that tenant's name.
  const tenant =
    caller.principal.tenant === null ? undefined : ctx.gov.policy.tenants.get(caller.principal.tenant);
  const unbound = tenant === undefined ? null : issuerRefusal(tenant, caller.principal);
  if (unbound !== null) return refuse(ctx, caller, raw, r, "tenant_mismatch", unbound);
  const now = ctx.gov.now();
  const time = Date.parse(r.time);
  if (time > now + MAX_CLOCK_SKEW_MS) {
    return refuse(ctx, caller, raw, r, "time_in_future", `time ${r.time} is ahead of the server's clock`);
  }
  if (time < now - MAX_AGE_MS) {
    return refuse(
      ctx,
      caller,
      raw,
      r,
      "time_too_old",
      `time ${r.time} is more than ${MAX_AGE_MS / 86_400_000} days ago`,
    );
  }
  const minted = callIdMillis(r.call_id);
  if (minted !== null && Math.abs(minted - time) > CALL_ID_WINDOW_MS) {
    const at = new Date(minted).toISOString();
    return refuse(
      ctx,
      caller,
      raw,
      r,
      "call_id_time_mismatch",
      `the call id was made at ${at}, not near the record's time ${r.time}`,
    );
  }
  const args = r.args ?? {};
  const { digest, bytes } = digestArgs(args);
  const found = await ctx.gov.queryAudit({ call_id: r.call_id, limit: 100 });
  const seen = classify(caller, r, digest, found.records);
  if (seen.result === "duplicate") return seen;
  if (seen.result === "taken") return refuse(ctx, caller, raw, r, "call_id_taken", seen.reason);
  // Stored by no one yet, or being stored right now by another request (a concurrent replay): count it once.
  if (!(await ctx.state.claimSpooled(seen.claim))) return { result: "duplicate" };

  const p = caller.principal;
  const policy = ctx.gov.policy;
  const failMode = p.tenant === null ? undefined : policy.tenants.get(p.tenant)?.failMode;
  const override = r.decision === "allow" && failMode !== "fail_open";
  const signed = caller.delegation;
  const chain = signed === null ? [r.agent] : [...signed.chain];
  const agent = chain[chain.length - 1] ?? r.agent;
  const tier = signed?.tier ?? r.tier ?? "interactive";
  const notes = claimsNotTaken(r, signed, chain, agent);
  const overridden = override
    ? `client override: ${failModeOf(p.tenant, failMode)}, yet the client ran this call fail-open; `
    : "";
  ctx.gov.recordEvent({
    kind: "spooled",
    tenant: p.tenant,
    user: p.user,
    email: p.email,
    agent,
    tier,
    chain,
    tool: r.tool,
    args_digest: digest,
    args: auditedArgs(args, policy.tools.get(r.tool), bytes, policy.maxArgsBytes),
    decision: r.decision,
    reason_code: r.reason_code,
    reason: `${overridden}${escapeUnsafeText(r.reason) || r.reason_code} (spooled by the client at ${r.time}${notes})`,
    rule: override ? CLIENT_OVERRIDE : null,
    outcome: r.outcome,
    trace_id: r.trace_id,
    call_id: r.call_id,
    latency_us: r.latency_us,
    source: "spool",
  });
  return { result: "stored", override };
}

/**
 * What the audit already holds under this record's call id says about it:
 * - nothing: new;
 * - this human's spooled record of the same call (tool, arguments, decision, trace) with the same outcome and
 *   latency: a replay (duplicate). Only what the record itself says is compared, so the same record sent under
 *   the human's own token after its delegation token expired, or after a policy change, is still a replay;
 * - this human's `started` record (outcome `none`) and now its end: stored as well (the outcome of that call);
 * - the control plane's own `fail_closed` denial of this human's call of this tool (it answered 503 with that
 *   call id, and the client acted on its fail mode): the client's account is stored next to it;
 * - anything else (another human's or tenant's call, a call the control plane decided, a different account of
 *   this call): the call id is taken.
 */
function classify(
  caller: Caller,
  r: SpooledRecord,
  digest: string,
  existing: readonly AuditRecord[],
):
  | { readonly result: "new"; readonly claim: string }
  | { readonly result: "duplicate" }
  | { readonly result: "taken"; readonly reason: string } {
  if (existing.length === 0) return { result: "new", claim: r.call_id };
  const p = caller.principal;
  const taken = (why: string) => ({
    result: "taken" as const,
    reason: `call id ${r.call_id} is already in the audit for ${why}`,
  });
  if (existing.some((e) => e.user !== p.user || e.tenant !== p.tenant)) {
    return taken("another user's or tenant's call");
  }
  const spooled = existing.filter((e) => e.source === "spool");
  const decided = existing.filter((e) => e.source !== "spool");
  const failedClosed = (e: AuditRecord) =>
    e.tool === r.tool && e.decision === "deny" && e.reason_code === "fail_closed";
  if (!decided.every(failedClosed)) {
    const e = decided.find((d) => !failedClosed(d)) as AuditRecord;
    return taken(`a call the control plane decided (${e.source} ${e.kind}: ${e.decision}/${e.reason_code})`);
  }
  const sameCall = (e: AuditRecord) =>
    e.tool === r.tool &&
    e.args_digest === digest &&
    e.decision === r.decision &&
    e.reason_code === r.reason_code &&
    e.trace_id === r.trace_id;
  if (!spooled.every(sameCall)) return taken("a different spooled call");
  if (spooled.some((e) => e.outcome === r.outcome && e.latency_us === r.latency_us)) {
    return { result: "duplicate" };
  }
  if (spooled.length === 0) return { result: "new", claim: r.call_id };
  if (r.outcome !== "none" && spooled.every((e) => e.outcome === "none")) {
    return { result: "new", claim: `${r.call_id}:outcome` };
  }
  return taken("a different account of this call");
}

/** What the record claimed and the server did not take from it, for the reason ("" when nothing). */
function claimsNotTaken(
  r: SpooledRecord,
  signed: Caller["delegation"],
  chain: readonly string[],
  agent: string,
): string {
  const notes: string[] = [];
  const claimed = r.chain.length > 0 ? r.chain : [r.agent];
  const source =
    signed === null ? "the bearer is not a delegation token" : "the delegation token says otherwise";
  if (claimed.join("\u0000") !== chain.join("\u0000")) {
    notes.push(`the record named the chain ${claimed.join(" > ")}, not taken: ${source}`);
  } else if (r.agent !== agent) {
    notes.push(`the record named the agent ${r.agent}, not taken: ${source}`);
  }
  if (signed !== null && r.tier !== undefined && r.tier !== signed.tier) {
    notes.push(`the record named the tier ${r.tier}, not taken: ${source}`);
  }
  return notes.map((n) => `; ${n}`).join("");
}

/** Why a fail-open record overrides the tenant's fail mode, in words. */
function failModeOf(tenant: string | null, failMode: string | undefined): string {
  if (tenant === null) return "the token names no tenant, so the fail mode is fail_closed";
  const name = escapeUnsafeText(JSON.stringify(tenant));
  return failMode === undefined
    ? `tenant ${name} is not configured, so its fail mode is fail_closed`
    : `the fail mode of tenant ${name} is ${failMode}`;
}

/**
 * Refuse a record: audited as the control plane's refusal (kind `attempt`, `deny`/`error`, a call id of its
 * own, the claimed call id in the reason), since a human sent it; the answer says the same.
 */
function refuse(
  ctx: ServerContext,
  caller: Caller,
  raw: unknown,
  r: SpooledRecord | null,
  code: SpoolRefusalCode,
  why: string,
): Replayed {
  const reason = escapeUnsafeText(why).slice(0, 1000);
  const claimed =
    r === null
      ? ""
      : `; the client reported ${r.decision}/${r.reason_code}, outcome ${r.outcome}, at ${r.time}, as call ${r.call_id}`;
  const rawTool = (raw as { tool?: unknown } | null)?.tool;
  const event: RefusalEvent = {
    ...asCaller(caller, r?.agent ?? null),
    tool: r?.tool ?? (typeof rawTool === "string" ? rawTool.slice(0, 200) : null),
    args_digest: r === null ? null : digestArgs(r.args ?? {}).digest,
    args: null,
    decision: "deny",
    reason_code: code === "tenant_mismatch" ? "tenant_mismatch" : "error",
    reason: `spooled record refused (${code}): ${reason}${claimed}`,
    rule: null,
    outcome: "none",
    // a caller the tenant does not take joins none of its runs
    trace_id: code === "tenant_mismatch" ? null : (r?.trace_id ?? null),
    call_id: newCallId(ctx.gov.now()),
    source: "spool",
  };
  return { result: "refused", code, reason, event };
}

/** A refusal is the control plane's record of what this caller sent: the human, and the chain it signed. */
function asCaller(caller: Caller, claimedAgent: string | null) {
  const p = caller.principal;
  return {
    kind: "attempt" as const,
    tenant: p.tenant,
    user: p.user,
    email: p.email,
    agent: caller.delegation?.chain.at(-1) ?? claimedAgent,
    tier: caller.delegation?.tier ?? null,
    chain: caller.delegation?.chain ?? [],
  };
}

/** The one record that counts a batch's refusals past {@link MAX_AUDITED_REFUSALS}, by code. */
function moreRefused(ctx: ServerContext, caller: Caller, refused: readonly SpoolRefusal[]): RefusalEvent {
  const rest = refused.slice(MAX_AUDITED_REFUSALS);
  const byCode = new Map<SpoolRefusalCode, number>();
  for (const r of rest) byCode.set(r.code, (byCode.get(r.code) ?? 0) + 1);
  const codes = [...byCode].map(([code, n]) => `${code} ×${n}`).join(", ");
  return {
    ...asCaller(caller, null),
    tool: null,
    args_digest: null,
    args: null,
    decision: "deny",
    reason_code: "error",
    reason: `${rest.length} more spooled records of this batch refused (${codes}); the first ${MAX_AUDITED_REFUSALS} are audited one by one`,
    rule: null,
    outcome: "none",
    trace_id: null,
    call_id: newCallId(ctx.gov.now()),
    source: "spool",
  };
}

/** The call id a (possibly malformed) record names, for the answer. */
function callIdOf(raw: unknown): string | null {
  const id = (raw as { call_id?: unknown } | null)?.call_id;
  return typeof id === "string" ? id.slice(0, 200) : null;
}
