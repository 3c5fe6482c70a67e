/**
 * Who can do what (`/ui/api/policy/*`, admins only): the tenants, a tenant's user × tool × tier matrix decided
 * by the engine of `policy explain`, and the what-if: a draft of the tenant's policy replayed against the last N
 * calls audited for that tenant, compared with the policy in force. Nothing is saved: the draft is validated
 * exactly like the config file (same messages) and thrown away.
 */
import type { FastifyInstance } from "fastify";
import { z } from "zod";
import { OnbehalfError } from "../../errors.js";
import { loadConfigObject } from "../../govern/config.js";
import { accessMatrix } from "../../policy/matrix.js";
import { replay } from "../../policy/replay.js";
import type { ServerContext } from "../context.js";
import { parseBody } from "../http.js";
import { consolePage } from "./audit-query.js";
import type { ConsoleAuth } from "./sign-in.js";

const MatrixQuery = z.strictObject({ tenant: z.string().min(1) });
const WhatIfBody = z.strictObject({
  tenant: z.string().min(1),
  policy: z.record(z.string(), z.unknown()),
  last: z.number().int().min(1).max(5000).default(500),
});
/** Users a matrix shows besides the directory's: the most recent callers of the tenant. */
const RECENT_USERS = 20;

export function consolePolicyRoutes(app: FastifyInstance, ctx: ServerContext, auth: ConsoleAuth): void {
  app.get("/ui/api/policy/tenants", async (req) => {
    await auth.require(req, { role: "admin" });
    return {
      tenants: ctx.gov.config.tenants.map((t) => ({ id: t.id, mode: t.policy.mode, policy: t.policy })),
    };
  });

  app.get("/ui/api/policy/matrix", async (req) => {
    await auth.require(req, { role: "admin" });
    const { tenant } = parseBody(MatrixQuery, req.query ?? {});
    const t = tenantOf(ctx, tenant);
    const users = new Set(t.users.map((u) => u.uid));
    await ctx.gov.flush();
    const recent = await consolePage(ctx.gov.auditStore, { tenant }, { kind: "attempt" }, 500);
    for (const r of recent.records) {
      if (users.size >= t.users.length + RECENT_USERS) break;
      if (r.user !== null) users.add(r.user);
    }
    return accessMatrix(ctx.gov.policy, tenant, [...users], ctx.gov.now());
  });

  app.post("/ui/api/policy/whatif", async (req) => {
    await auth.require(req, { role: "admin", change: true });
    const body = parseBody(WhatIfBody, req.body);
    const t = tenantOf(ctx, body.tenant);
    const config = ctx.gov.config;
    // Validated like the config file: a draft that does not load is refused with the file's messages.
    const compiled = loadConfigObject({
      ...config,
      tenants: config.tenants.map((x) => (x.id === t.id ? { ...x, policy: body.policy } : x)),
    }).policy;
    // The tools in force, those declared in code and by upstreams included: only the tenant's policy is drafted.
    const draft = { ...compiled, tools: ctx.gov.policy.tools };
    await ctx.gov.flush();
    const calls = await consolePage(ctx.gov.auditStore, { tenant: t.id }, { kind: "attempt" }, body.last);
    const report = replay(calls.records, ctx.gov.policy, draft);
    return { tenant: t.id, last: body.last, ...report };
  });
}

function tenantOf(ctx: ServerContext, id: string) {
  const t = ctx.gov.config.tenants.find((x) => x.id === id);
  if (t === undefined) throw new OnbehalfError("ERR_NOT_FOUND", `no tenant "${id}"`);
  return t;
}
