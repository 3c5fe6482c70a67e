/**
 * `POST /v1/audit/spool`: records a remote client wrote to its local spool while it could not reach the
 * control plane (it acted on the tenant's fail mode), replayed now. The human comes from the bearer token,
 * never from the records; each record is stored once (idempotent by `call_id`) with `source: spool`.
 */
import type { FastifyInstance } from "fastify";
import { z } from "zod";
import { digestArgs } from "../audit/record.js";
import { redact } from "../policy/redact.js";
import { safeText, Tier } from "../policy/schema.js";
import type { ServerContext } from "./context.js";
import { authenticate, parseBody } from "./http.js";

const MAX_RECORDS = 1000;

const SpooledRecord = z.strictObject({
  call_id: safeText(100).min(8),
  time: z.string().datetime({ offset: true }),
  tool: safeText(),
  args: z.unknown().optional(),
  agent: safeText(),
  tier: Tier.default("interactive"),
  chain: z.array(safeText()).max(32).default([]),
  decision: z.enum(["allow", "deny"]),
  reason_code: z.enum(["fail_open", "fail_closed"]),
  reason: z.string().max(2000).default(""),
  outcome: z.enum(["ok", "error", "none"]),
  latency_us: z.number().int().min(0).default(0),
  trace_id: safeText().nullable().default(null),
});
const SpoolBody = z.strictObject({ records: z.array(SpooledRecord).max(MAX_RECORDS) });

export function spoolRoutes(app: FastifyInstance, ctx: ServerContext): void {
  app.post("/v1/audit/spool", async (req) => {
    const { principal } = await authenticate(ctx.gov, ctx.issuer, req);
    const { records } = parseBody(SpoolBody, req.body);
    let accepted = 0;
    let duplicates = 0;
    for (const r of records) {
      // Stored already (a replay), or being stored right now by another request: count it once.
      if ((await alreadyStored(ctx, r.call_id)) || !(await ctx.state.claimSpooled(r.call_id))) {
        duplicates++;
        continue;
      }
      const tool = ctx.gov.policy.tools.get(r.tool);
      const args = r.args ?? {};
      ctx.gov.recordEvent({
        kind: "attempt",
        tenant: principal.tenant,
        user: principal.user,
        email: principal.email,
        agent: r.agent,
        tier: r.tier,
        chain: r.chain.length > 0 ? r.chain : [r.agent],
        tool: r.tool,
        args_digest: digestArgs(args).digest,
        args: tool === undefined || tool.redactPaths.length === 0 ? args : redact(args, tool.redactPaths),
        decision: r.decision,
        reason_code: r.reason_code,
        reason: `${r.reason || r.reason_code} (spooled by the client at ${r.time})`,
        rule: null,
        outcome: r.outcome,
        trace_id: r.trace_id,
        call_id: r.call_id,
        latency_us: r.latency_us,
        source: "spool",
      });
      accepted++;
    }
    if (accepted > 0) await ctx.gov.flush(); // the client deletes its spool on this answer: commit first
    return { accepted, duplicates };
  });
}

/** A record of this call already in the audit (replayed before, or through another instance). */
async function alreadyStored(ctx: ServerContext, callId: string): Promise<boolean> {
  const found = await ctx.gov.queryAudit({ call_id: callId, limit: 10 });
  return found.records.some((r) => r.source === "spool");
}
