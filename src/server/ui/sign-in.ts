/**
 * Signing in to the console and out of it: `POST /ui/session` with an admin token or an IdP token (JSON
 * `{"token": …}` or a form field `token`), the development sign-in (`{"dev": true}`, only with `dev_issuer: true`
 * and only from this machine), `DELETE /ui/session`, and `GET /ui/api/me` (who is signed in, and the CSRF token
 * the page keeps in memory). Every other console route asks {@link ConsoleAuth.require} who is calling.
 */
import type { FastifyInstance, FastifyRequest } from "fastify";
import { z } from "zod";
import { OnbehalfError } from "../../errors.js";
import type { Principal } from "../../identity/principal.js";
import { issuerRefusal } from "../../policy/decide.js";
import { APPROVE_SCOPE, approverRefusal } from "../approvals.js";
import type { ServerContext } from "../context.js";
import { parseBody } from "../http.js";
import {
  type ConsoleRole,
  type ConsoleSession,
  ConsoleSessions,
  checkCsrf,
  SESSION_TTL_MS,
  sessionIdOf,
  setSessionCookie,
} from "./session.js";

const SignInBody = z.union([
  z.strictObject({ token: z.string().min(1).max(16_384) }),
  z.strictObject({ dev: z.literal(true) }),
]);

export interface ConsoleAuth {
  /**
   * The session of this request, or a refusal: 401 without a live session, 403 for a change without the CSRF
   * token, 403 for an admin page asked by an approver, 403 for an approver who no longer is one.
   */
  require(req: FastifyRequest, options?: { change?: boolean; role?: ConsoleRole }): Promise<ConsoleSession>;
}

/**
 * The sign-in routes; returns the guard the other console routes use.
 *
 * @example
 * const auth = signInRoutes(app, ctx, { adminScope: null });
 * app.get("/ui/api/x", async (req) => (await auth.require(req)).role);
 */
export function signInRoutes(
  app: FastifyInstance,
  ctx: ServerContext,
  options: {
    readonly adminScope: string | null;
    readonly secure: boolean;
    readonly publicOrigin: string | null;
  },
): ConsoleAuth {
  const sessions = new ConsoleSessions(ctx.state, () => ctx.gov.now());
  const secure = (req: FastifyRequest) => options.secure || req.protocol === "https";

  const require: ConsoleAuth["require"] = async (req, opts = {}) => {
    const id = sessionIdOf(req);
    const session = await sessions.get(id);
    if (session === null) {
      throw new OnbehalfError("ERR_TOKEN_MISSING", "no console session: sign in at /ui");
    }
    if (opts.change === true) checkCsrf(req, session);
    if (session.principal !== null) {
      // Policy changes live: a user removed from the directory, whose scope was taken away, or whose issuer no
      // longer vouches for every tenant, is out now.
      const refusal =
        session.role === "admin"
          ? adminRefusal(ctx, session.principal, options.adminScope)
          : approverRefusal(ctx, { principal: session.principal, delegation: null });
      if (refusal !== null) {
        await sessions.close(id);
        throw new OnbehalfError(
          "ERR_POLICY_DENIED",
          `no longer ${session.role === "admin" ? "an admin" : "an approver"}: ${refusal}`,
        );
      }
    }
    if (opts.role === "admin" && session.role !== "admin") {
      throw new OnbehalfError(
        "ERR_POLICY_DENIED",
        "this page is for admins; approvers see the inbox and the audit of their tenant",
      );
    }
    return session;
  };

  app.post("/ui/session", async (req, reply) => {
    refuseCrossSite(req, options.publicOrigin);
    const form = req.headers["content-type"]?.startsWith("application/x-www-form-urlencoded") === true;
    const body = parseBody(SignInBody, req.body);
    const who = "dev" in body ? devSignIn(ctx, req) : await signIn(ctx, body.token, options.adminScope);
    const { id, session } = await sessions.open(
      who.session,
      Math.min(ctx.gov.now() + SESSION_TTL_MS, who.until),
    );
    setSessionCookie(reply, id, session.expiresAt - ctx.gov.now(), secure(req));
    reply.header("cache-control", "no-store");
    // A form posted without script lands on the console; the page's own sign-in reads the answer.
    if (form) return reply.code(303).header("location", "/ui/").send();
    return describe(session);
  });

  app.delete("/ui/session", async (req, reply) => {
    const session = await sessions.get(sessionIdOf(req));
    if (session !== null) checkCsrf(req, session);
    await sessions.close(sessionIdOf(req));
    setSessionCookie(reply, null, 0, secure(req));
    return reply.code(204).send();
  });

  app.get("/ui/api/me", async (req, reply) => {
    reply.header("cache-control", "no-store");
    return describe(await require(req));
  });

  app.get("/ui/api/info", async (_req, reply) => {
    reply.header("cache-control", "no-store");
    return {
      dev_sign_in: ctx.gov.config.dev_issuer,
      approve_scope: APPROVE_SCOPE,
      admin_scope: options.adminScope,
    };
  });

  return { require };
}

function describe(s: ConsoleSession) {
  return {
    role: s.role,
    tenant: s.tenant,
    who: s.who,
    csrf: s.csrf,
    expires_at: new Date(s.expiresAt).toISOString(),
  };
}

interface SignedIn {
  readonly session: Omit<ConsoleSession, "csrf" | "expiresAt">;
  /** The session ends no later than this (ms): the token's own expiry. */
  readonly until: number;
}

/** Who a token signs in as: an admin token; else a verified human with the admin scope, or an approver. */
async function signIn(ctx: ServerContext, token: string, adminScope: string | null): Promise<SignedIn> {
  const admin = ctx.adminOf({ headers: { authorization: `Bearer ${token}` } } as FastifyRequest);
  if (admin !== null)
    return { session: { role: "admin", tenant: null, who: admin, principal: null }, until: Infinity };
  const principal = await ctx.gov.verify(token);
  const until = principal.exp > 0 ? principal.exp * 1000 : Infinity;
  if (principal.issuer === ctx.issuer) {
    throw new OnbehalfError(
      "ERR_POLICY_DENIED",
      "an agent's delegation token cannot sign in to the console: the human can",
    );
  }
  const notAdmin = adminRefusal(ctx, principal, adminScope);
  if (notAdmin === null) {
    return { session: { role: "admin", tenant: null, who: principal.user, principal }, until };
  }
  const refusal = approverRefusal(ctx, { principal, delegation: null });
  if (refusal !== null) {
    throw new OnbehalfError(
      "ERR_POLICY_DENIED",
      `the console needs an admin token${adminScope === null ? "" : ` or the ${adminScope} scope (${notAdmin})`}, or an approver: ${refusal}`,
    );
  }
  return { session: { role: "approver", tenant: principal.tenant, who: principal.user, principal }, until };
}

/**
 * Why this human is not a console admin, or null when they are: an admin sees every tenant, so the admin scope
 * counts only from an issuer that may vouch for every tenant — another customer's identity provider granting
 * it makes nobody an admin of this one's records.
 */
function adminRefusal(ctx: ServerContext, principal: Principal, adminScope: string | null): string | null {
  if (adminScope === null) return "no admin scope is configured";
  if (!principal.scopes.includes(adminScope)) return `the token does not grant ${adminScope}`;
  for (const tenant of ctx.gov.policy.tenants.values()) {
    const unbound = issuerRefusal(tenant, principal);
    if (unbound !== null) return `an admin sees every tenant, and ${unbound}`;
  }
  return null;
}

/** The development sign-in: an admin session, with `dev_issuer: true`, for a browser on this machine only. */
function devSignIn(ctx: ServerContext, req: FastifyRequest): SignedIn {
  if (!ctx.gov.config.dev_issuer) {
    throw new OnbehalfError("ERR_POLICY_DENIED", "the development sign-in needs dev_issuer: true");
  }
  if (!isLoopback(req.socket.remoteAddress)) {
    throw new OnbehalfError(
      "ERR_POLICY_DENIED",
      "the development sign-in is for a browser on the server's machine",
    );
  }
  return { session: { role: "admin", tenant: null, who: "admin:dev", principal: null }, until: Infinity };
}

function isLoopback(address: string | undefined): boolean {
  return (
    address === "::1" || address?.startsWith("127.") === true || address?.startsWith("::ffff:127.") === true
  );
}

/**
 * A sign-in posted by a page of another site is refused (login CSRF: signing a victim in as someone else). A
 * browser says where a request comes from (`Sec-Fetch-Site`, `Origin`); a client without them is no browser.
 */
function refuseCrossSite(req: FastifyRequest, publicOrigin: string | null): void {
  const site = req.headers["sec-fetch-site"];
  const origin = req.headers.origin;
  const host = req.headers.host;
  // Behind a proxy the page's origin is public_url's, whatever Host the proxy sends on.
  const sameOrigin =
    typeof origin !== "string" ||
    origin === publicOrigin ||
    (host !== undefined && (origin === `http://${host}` || origin === `https://${host}`));
  if ((typeof site === "string" && site !== "same-origin" && site !== "none") || !sameOrigin) {
    throw new OnbehalfError("ERR_CSRF", "a console sign-in must come from the console's own page");
  }
}
