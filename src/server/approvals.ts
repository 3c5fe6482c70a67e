/**
 * Approvals over HTTP: a decision `ask` holds the call for a human. Approvers (admin tokens, or users of the
 * same tenant whose token grants `onbehalf:approve`) list and decide them; the waiting client polls or
 * long-polls its approval, then asks again with it (`/v1/check` with `approval`), which is when the approval is
 * used and the call decided again. The rules (one use, bound to the call, nobody approves their own request,
 * the policy in force wins) are the governor's: see src/govern/approvals.ts.
 */
import type { FastifyInstance, FastifyRequest } from "fastify";
import { z } from "zod";
import { OnbehalfError } from "../errors.js";
import { type Approval, publicApproval } from "../govern/approvals.js";
import type { Principal } from "../identity/principal.js";
import { directoryCap, issuerRefusal } from "../policy/decide.js";
import type { ServerContext } from "./context.js";
import { authenticate, type Caller, parseBody } from "./http.js";

/** The scope that lets a user decide approvals in their tenant. */
export const APPROVE_SCOPE = "onbehalf:approve";
const MAX_WAIT_SECONDS = 60;

const DecideBody = z.strictObject({
  decision: z.enum(["approve", "deny"]),
  note: z.string().max(2000).optional(),
});
const STATUSES = ["pending", "approved", "denied", "expired", "revoked", "used"] as const;
const ListQuery = z.strictObject({ status: z.enum(STATUSES).optional() });
const GetQuery = z.strictObject({ wait: z.coerce.number().min(0).max(MAX_WAIT_SECONDS).optional() });

/**
 * Who asks: an admin token; or a user, who is an approver of their tenant only as the tenant sees them: a human
 * (not an agent holding a delegation token: a prompt-injected agent must not approve), a member in good standing
 * (not disabled, listed when the tenant requires it), whose token's issuer may vouch for the tenant, and whose
 * effective scopes (the token's, capped by the directory) include `onbehalf:approve`.
 */
type Viewer = { kind: "admin" } | { kind: "user"; principal: Principal; approver: string | null };

export function approvalRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const approvals = ctx.gov.approvals;
  const viewer = async (req: FastifyRequest): Promise<Viewer> => {
    if (ctx.adminOf(req) !== null) return { kind: "admin" };
    const caller = await authenticate(ctx.gov, ctx.issuer, req);
    return { kind: "user", principal: caller.principal, approver: approverRefusal(ctx, caller) };
  };

  app.get("/v1/approvals", async (req) => {
    const who = await viewer(req);
    const { status } = parseBody(ListQuery, req.query ?? {});
    if (who.kind === "user" && who.approver !== null) {
      throw new OnbehalfError("ERR_POLICY_DENIED", `listing approvals needs an admin token: ${who.approver}`);
    }
    const all = await approvals.list(status);
    return {
      approvals: all
        .filter((a) => who.kind === "admin" || a.tenant === who.principal.tenant)
        .map(publicApproval),
    };
  });

  app.get<{ Params: { id: string } }>("/v1/approvals/:id", async (req) => {
    const who = await viewer(req);
    const { wait } = parseBody(GetQuery, req.query ?? {});
    const found = await approvals.get(req.params.id);
    if (found === null) throw new OnbehalfError("ERR_NOT_FOUND", `no approval ${req.params.id}`);
    if (!mayView(who, found))
      throw new OnbehalfError("ERR_POLICY_DENIED", "this approval belongs to another user");
    const waitMs = Math.min(wait ?? 0, MAX_WAIT_SECONDS) * 1000;
    const latest = waitMs > 0 && found.status === "pending" ? await approvals.wait(found.id, waitMs) : found;
    return publicApproval(latest ?? found);
  });

  app.post<{ Params: { id: string } }>("/v1/approvals/:id", async (req) => {
    const who = await viewer(req);
    const body = parseBody(DecideBody, req.body);
    const found = await approvals.get(req.params.id);
    if (found === null) throw new OnbehalfError("ERR_NOT_FOUND", `no approval ${req.params.id}`);
    let by = "admin";
    if (who.kind === "user") {
      const p = who.principal;
      if (who.approver !== null || p.tenant !== found.tenant) {
        throw new OnbehalfError(
          "ERR_POLICY_DENIED",
          `deciding approvals of tenant ${found.tenant} needs an approver of that tenant: ${who.approver ?? `the token is for tenant ${p.tenant}`}`,
        );
      }
      by = p.user;
    }
    return approvals.decide(found.id, { id: by }, body.decision, body.note);
  });
}

/** Why this caller is not an approver of their tenant, or null when they are. */
export function approverRefusal(ctx: ServerContext, caller: Caller): string | null {
  const p = caller.principal;
  if (caller.delegation !== null) return "an agent's delegation token cannot decide approvals: the human can";
  const tenant = p.tenant === null ? undefined : ctx.gov.policy.tenants.get(p.tenant);
  if (tenant === undefined) return `the token names no configured tenant`;
  const unbound = issuerRefusal(tenant, p);
  if (unbound !== null) return unbound;
  const member = tenant.directory.get(p.user);
  if (member?.disabled === true || (tenant.requireMembership && member === undefined)) {
    return `${p.user} is not a member of tenant ${tenant.id} in good standing`;
  }
  if (!directoryCap(ctx.gov.policy, p, new Set(p.scopes)).includes(APPROVE_SCOPE)) {
    return `the ${APPROVE_SCOPE} scope is needed (the token's scopes, capped by the tenant's directory)`;
  }
  return null;
}

function mayView(who: Viewer, a: Approval): boolean {
  if (who.kind === "admin") return true;
  const p = who.principal;
  return (p.user === a.user && p.tenant === a.tenant) || (who.approver === null && p.tenant === a.tenant);
}
