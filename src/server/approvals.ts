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
import type { ServerContext } from "./context.js";
import { authenticate, parseBody } from "./http.js";

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

type Viewer = { kind: "admin" } | { kind: "user"; principal: Principal };

export function approvalRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const approvals = ctx.gov.approvals;
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
      if (!p.scopes.includes(APPROVE_SCOPE) || p.tenant !== found.tenant) {
        throw new OnbehalfError(
          "ERR_POLICY_DENIED",
          `deciding approvals needs the ${APPROVE_SCOPE} scope in tenant ${found.tenant}`,
        );
      }
      by = p.user;
    }
    return approvals.decide(found.id, { id: by }, body.decision, body.note);
  });
}

function mayView(who: Viewer, a: Approval): boolean {
  if (who.kind === "admin") return true;
  const p = who.principal;
  return (
    (p.user === a.user && p.tenant === a.tenant) ||
    (p.scopes.includes(APPROVE_SCOPE) && p.tenant === a.tenant)
  );
}
