/**
 * Approvals: a decision `ask` holds the call for a human. Approvers (admin tokens, or users of the same tenant
 * whose token grants `onbehalf:approve`) list and decide them; the waiting client polls or long-polls the
 * approval, then reports its result once. Nobody approves their own request. Every step is audited.
 */
import type { FastifyInstance, FastifyRequest } from "fastify";
import { z } from "zod";
import { OnbehalfError } from "../errors.js";
import type { CallAttempt } from "../govern/pipeline.js";
import type { Principal } from "../identity/principal.js";
import type { ServerContext } from "./context.js";
import { authenticate, parseBody } from "./http.js";
import type { Approval } from "./state.js";

/** The scope that lets a user decide approvals in their tenant. */
export const APPROVE_SCOPE = "onbehalf:approve";
const MAX_WAIT_SECONDS = 60;

const DecideBody = z.strictObject({
  decision: z.enum(["approve", "deny"]),
  note: z.string().max(2000).optional(),
});
const ListQuery = z.strictObject({ status: z.enum(["pending", "approved", "denied", "expired"]).optional() });
const GetQuery = z.strictObject({ wait: z.coerce.number().min(0).max(MAX_WAIT_SECONDS).optional() });

type Viewer = { kind: "admin" } | { kind: "user"; principal: Principal };

export function approvalRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const viewer = async (req: FastifyRequest): Promise<Viewer> =>
    ctx.isAdmin(req)
      ? { kind: "admin" }
      : { kind: "user", principal: (await authenticate(ctx.gov, ctx.issuer, req)).principal };

  app.get("/v1/approvals", async (req) => {
    const who = await viewer(req);
    const { status } = parseBody(ListQuery, req.query ?? {});
    if (who.kind === "user" && !who.principal.scopes.includes(APPROVE_SCOPE)) {
      throw new OnbehalfError(
        "ERR_POLICY_DENIED",
        `listing approvals needs an admin token or the ${APPROVE_SCOPE} scope`,
      );
    }
    const all = (await ctx.state.listApprovals(undefined)).map((a) => current(ctx, a));
    return {
      approvals: all.filter(
        (a) =>
          (status === undefined || a.status === status) &&
          (who.kind === "admin" || a.tenant === who.principal.tenant),
      ),
    };
  });

  app.get<{ Params: { id: string } }>("/v1/approvals/:id", async (req) => {
    const who = await viewer(req);
    const { wait } = parseBody(GetQuery, req.query ?? {});
    const found = await ctx.state.getApproval(req.params.id);
    if (found === null) throw new OnbehalfError("ERR_NOT_FOUND", `no approval ${req.params.id}`);
    if (!mayView(who, found))
      throw new OnbehalfError("ERR_POLICY_DENIED", "this approval belongs to another user");
    const waitMs = Math.min(wait ?? 0, MAX_WAIT_SECONDS) * 1000;
    const remaining = Date.parse(found.expires_at) - ctx.gov.now();
    const latest =
      waitMs > 0 ? await ctx.state.waitApproval(found.id, Math.max(0, Math.min(waitMs, remaining))) : found;
    return current(ctx, latest ?? found);
  });

  app.post<{ Params: { id: string } }>("/v1/approvals/:id", async (req) => {
    const who = await viewer(req);
    const body = parseBody(DecideBody, req.body);
    const found = await ctx.state.getApproval(req.params.id);
    if (found === null) throw new OnbehalfError("ERR_NOT_FOUND", `no approval ${req.params.id}`);
    let by = "admin";
    if (who.kind === "user") {
      const p = who.principal;
      if (!p.scopes.includes(APPROVE_SCOPE) || p.tenant !== found.tenant) {
        throw new OnbehalfError(
          "ERR_POLICY_DENIED",
          `deciding approvals needs the ${APPROVE_SCOPE} scope in tenant ${found.tenant}`,
        );
      }
      if (p.user === found.user)
        throw new OnbehalfError("ERR_POLICY_DENIED", "nobody approves their own request");
      by = p.user;
    }
    if (current(ctx, found).status === "expired") {
      await ctx.state.decideApproval(found.id, { status: "expired" });
      throw new OnbehalfError("ERR_CONFLICT", `approval ${found.id} expired at ${found.expires_at}`);
    }
    const decided = await ctx.state.decideApproval(found.id, {
      status: body.decision === "approve" ? "approved" : "denied",
      decided_by: by,
      decided_at: new Date(ctx.gov.now()).toISOString(),
      ...(body.note === undefined ? {} : { note: body.note }),
    });
    if (decided === null) throw new OnbehalfError("ERR_CONFLICT", `approval ${found.id} was already decided`);
    const approved = decided.status === "approved";
    const recorded = ctx.gov.recordEvent({
      kind: "approval",
      tenant: decided.tenant,
      user: decided.user,
      email: decided.email,
      agent: decided.agent,
      tier: null,
      chain: decided.chain,
      tool: decided.tool,
      args_digest: null,
      args: decided.args,
      decision: approved ? "allow" : "deny",
      reason_code: approved ? "ok" : "approval_denied",
      reason: `${approved ? "approved" : "denied"} by ${by}${body.note ? `: ${body.note}` : ""}`,
      rule: decided.rule,
      outcome: approved ? "pending" : "none",
      trace_id: null,
      call_id: decided.call_id,
    });
    await ctx.gov.auditLog.acknowledged(recorded);
    return decided;
  });
}

function mayView(who: Viewer, a: Approval): boolean {
  if (who.kind === "admin") return true;
  const p = who.principal;
  return p.user === a.user || (p.scopes.includes(APPROVE_SCOPE) && p.tenant === a.tenant);
}

/** A pending approval past its expiry reads as expired. */
export function current(ctx: ServerContext, a: Approval): Approval {
  return a.status === "pending" && Date.parse(a.expires_at) <= ctx.gov.now()
    ? { ...a, status: "expired" }
    : a;
}

/** Open an approval for a call the policy answered with `ask`; it expires after the server's approval lifetime. */
export async function openApproval(ctx: ServerContext, attempt: CallAttempt): Promise<Approval> {
  const now = ctx.gov.now();
  const f = attempt.fields;
  const approval: Approval = {
    id: `apr_${attempt.callId}`,
    call_id: attempt.callId,
    status: "pending",
    tenant: f.tenant,
    user: f.user ?? "",
    email: f.email,
    agent: f.agent ?? "",
    chain: f.chain,
    tool: f.tool ?? "",
    args: f.args,
    rule: f.rule,
    reason: f.reason,
    created_at: new Date(now).toISOString(),
    expires_at: new Date(now + ctx.approvalTtlMs).toISOString(),
  };
  // Kept a day past expiry so the requester can still read why it ended.
  await ctx.state.putApproval(approval, ctx.approvalTtlMs + 86_400_000);
  return approval;
}
