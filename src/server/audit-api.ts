/**
 * Audit over HTTP (admin): query, the latest signed checkpoint, inclusion proofs; and the public endpoints:
 * the JWKS of the tokens this control plane signs, health, metrics.
 */
import type { FastifyInstance } from "fastify";
import { z } from "zod";
import { proveInclusion } from "../audit/proof.js";
import { OnbehalfError } from "../errors.js";
import type { ServerContext } from "./context.js";
import { parseBody, requireAdmin } from "./http.js";

const AuditQuery = z.strictObject({
  tenant: z.string().optional(),
  user: z.string().optional(),
  tool: z.string().optional(),
  decision: z.enum(["allow", "deny", "ask"]).optional(),
  agent: z.string().optional(),
  /** The records of one run: its trace id. */
  trace: z.string().optional(),
  since: z.string().optional(),
  until: z.string().optional(),
  limit: z.coerce.number().int().min(1).max(1000).optional(),
  cursor: z.string().optional(),
});

export function auditRoutes(app: FastifyInstance, ctx: ServerContext): void {
  app.get("/v1/audit", async (req) => {
    requireAdmin(ctx.adminOf, req);
    const { trace, ...q } = parseBody(AuditQuery, req.query ?? {});
    const query = Object.fromEntries(Object.entries(q).filter(([, v]) => v !== undefined));
    return ctx.gov.queryAudit(trace === undefined ? query : { ...query, trace_id: trace });
  });

  app.get("/v1/audit/checkpoint", async (req) => {
    requireAdmin(ctx.adminOf, req);
    const { log } = parseBody(z.strictObject({ log: z.string().optional() }), req.query ?? {});
    const latest = await ctx.gov.auditStore.latestCheckpoint(log ?? ctx.gov.auditLog.logId);
    if (latest === null) throw new OnbehalfError("ERR_NOT_FOUND", "no checkpoint has been signed yet");
    return {
      log: latest.log,
      size: latest.size,
      root: Buffer.from(latest.root, "hex").toString("base64"),
      checkpoint: latest.note,
    };
  });

  app.get<{ Params: { seq: string } }>("/v1/audit/proof/:seq", async (req) => {
    requireAdmin(ctx.adminOf, req);
    const q = parseBody(
      z.strictObject({ log: z.string().optional(), size: z.coerce.number().int().positive().optional() }),
      req.query ?? {},
    );
    const seq = Number(req.params.seq);
    if (!Number.isSafeInteger(seq) || seq < 1)
      throw new OnbehalfError("ERR_INVALID_ARGUMENT", "seq must be a positive integer");
    return proveInclusion(ctx.gov.auditStore, q.log ?? ctx.gov.auditLog.logId, seq, q.size);
  });

  app.get("/.well-known/jwks.json", async (_req, reply) => {
    reply.header("cache-control", "public, max-age=300");
    return { keys: [ctx.key.publicJwk] };
  });

  app.get("/healthz", async (_req, reply) => {
    const log = ctx.gov.auditLog;
    const stateProblem = await ctx.state.ping().then(
      () => null,
      (e: unknown) => (e as Error).message,
    );
    const audit = log.healthy;
    const state = stateProblem === null;
    // Why it is degraded, in words an operator can act on (never a secret: store errors name no password).
    const problems = [log.problem, stateProblem].filter((p): p is string => p !== null);
    return reply.code(audit && state ? 200 : 503).send({
      status: audit && state ? "ok" : "degraded",
      audit,
      state,
      log: log.logId,
      ...(problems.length === 0 ? {} : { problems }),
    });
  });

  app.get("/metrics", async (_req, reply) =>
    reply.type(ctx.metrics.contentType).send(await ctx.metrics.render()),
  );
}
