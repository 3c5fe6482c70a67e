/**
 * The approvals inbox (`/ui/api/approvals`): the pending `ask` decisions an approver may decide (an admin: all;
 * an approver: their tenant's only), and approving or denying one with a note. Deciding goes through the
 * governor like `POST /v1/approvals/{id}`: one decision, never on one's own request, audited as an `approval`
 * record before it is answered; the waiting client then proceeds.
 */
import type { FastifyInstance } from "fastify";
import { z } from "zod";
import { OnbehalfError } from "../../errors.js";
import { publicApproval } from "../../govern/approvals.js";
import type { ServerContext } from "../context.js";
import { parseBody } from "../http.js";
import type { ConsoleAuth } from "./sign-in.js";

const DecideBody = z.strictObject({
  decision: z.enum(["approve", "deny"]),
  note: z.string().max(2000).optional(),
});

export function consoleInboxRoutes(app: FastifyInstance, ctx: ServerContext, auth: ConsoleAuth): void {
  app.get("/ui/api/approvals", async (req, reply) => {
    const session = await auth.require(req);
    const pending = await ctx.gov.approvals.list("pending");
    reply.header("cache-control", "no-store");
    return {
      server_time: new Date(ctx.gov.now()).toISOString(),
      approvals: pending
        .filter((a) => session.role === "admin" || (a.tenant !== null && a.tenant === session.tenant))
        .map(publicApproval),
    };
  });

  app.post<{ Params: { id: string } }>("/ui/api/approvals/:id", async (req) => {
    const session = await auth.require(req, { change: true });
    const body = parseBody(DecideBody, req.body);
    const found = await ctx.gov.approvals.get(req.params.id);
    // Another tenant's approval is not found: an approver learns nothing of other tenants.
    if (found === null || (session.role !== "admin" && found.tenant !== session.tenant)) {
      throw new OnbehalfError("ERR_NOT_FOUND", `no approval ${req.params.id}`);
    }
    return publicApproval(
      await ctx.gov.approvals.decide(found.id, { id: session.who }, body.decision, body.note),
    );
  });
}
