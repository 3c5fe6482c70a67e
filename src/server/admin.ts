/**
 * The admin API: read the live config; replace a tenant, patch its policy, declare a tool, delete a tenant. Changes are validated
 * exactly like the config file (same messages), applied from the next call, shared with the other instances,
 * and audited as admin events. A change that does not validate leaves the policy in force untouched.
 */
import type { FastifyInstance, FastifyRequest } from "fastify";
import { OnbehalfError } from "../errors.js";
import type { ServerContext } from "./context.js";
import { requireAdmin } from "./http.js";

export function adminRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const change = async (req: FastifyRequest, what: string, apply: () => void, body: unknown) => {
    const who = requireAdmin(ctx.adminOf, req);
    if (body === undefined || body === null || typeof body !== "object") {
      throw new OnbehalfError("ERR_INVALID_ARGUMENT", "the request needs a JSON object body");
    }
    await ctx.live.change(who, what, apply, body);
  };

  app.get("/v1/admin/config", async (req) => {
    requireAdmin(ctx.adminOf, req);
    const { tenants, tools } = ctx.gov.config;
    return { ...ctx.live.current, config: { tenants, tools } };
  });

  app.put<{ Params: { id: string } }>("/v1/admin/tenants/:id", async (req) => {
    const body = req.body as Record<string, unknown> | undefined;
    if (body && typeof body === "object" && body["id"] !== undefined && body["id"] !== req.params.id) {
      throw new OnbehalfError(
        "ERR_INVALID_ARGUMENT",
        `the body's id "${String(body["id"])}" differs from the URL's "${req.params.id}"`,
      );
    }
    await change(
      req,
      `replaced tenant ${req.params.id}`,
      () => ctx.gov.replaceTenant({ ...body, id: req.params.id }),
      body,
    );
    return tenantOf(ctx, req.params.id);
  });

  app.patch<{ Params: { id: string } }>("/v1/admin/tenants/:id/policy", async (req) => {
    requireAdmin(ctx.adminOf, req);
    if (!ctx.gov.config.tenants.some((t) => t.id === req.params.id)) {
      throw new OnbehalfError("ERR_NOT_FOUND", `no tenant "${req.params.id}"`);
    }
    await change(
      req,
      `patched the policy of tenant ${req.params.id}`,
      () => ctx.gov.patchTenantPolicy(req.params.id, req.body),
      req.body,
    );
    return tenantOf(ctx, req.params.id);
  });

  app.delete<{ Params: { id: string } }>("/v1/admin/tenants/:id", async (req, reply) => {
    requireAdmin(ctx.adminOf, req);
    let existed = false;
    await change(
      req,
      `deleted tenant ${req.params.id}`,
      () => {
        existed = ctx.gov.deleteTenant(req.params.id);
        if (!existed) throw new OnbehalfError("ERR_NOT_FOUND", `no tenant "${req.params.id}"`);
      },
      { id: req.params.id },
    );
    return reply.code(204).send();
  });

  app.put<{ Params: { name: string } }>("/v1/admin/tools/:name", async (req) => {
    const body = req.body as Record<string, unknown> | undefined;
    await change(
      req,
      `declared tool ${req.params.name}`,
      () => ctx.gov.putTool({ ...body, name: req.params.name }),
      body,
    );
    return ctx.gov.config.tools.find((t) => t.name === req.params.name);
  });
}

function tenantOf(ctx: ServerContext, id: string) {
  return ctx.gov.config.tenants.find((t) => t.id === id);
}
