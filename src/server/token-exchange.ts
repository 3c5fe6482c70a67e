/**
 * `POST /v1/token`: RFC 8693 token exchange. A user's token (or an earlier delegation token) is exchanged for
 * a delegation token naming one more agent. The granted scope is the requested scope ∩ the subject's: an
 * over-reaching request is attenuated, not refused, so a later over-reaching call is denied with the whole
 * chain in the audit; the answer's `scope` and the audit record say what was dropped. With a user's own token,
 * `subject_actor` names the agent holding it, so the chain starts with that agent.
 *
 * It speaks OAuth 2.0 as any client library expects: JSON or form bodies, `client_id` and client
 * authentication (oauth-clients.ts), errors as RFC 6749 §5.2 objects (oauth-errors.ts), `Cache-Control:
 * no-store` on every answer. A registered client that authenticated vouches for the agents it names (signed
 * into their `act` claims as `client_id`); a tenant with `require_client_auth` takes no other delegation.
 *
 * `authorization_details` (RFC 9396, of the type `urn:onbehalf:capabilities`) states the new hop's task
 * capabilities: they are signed into the token on top of the subject token's own, never in their place, so a call
 * under the new token must pass both (docs/capabilities.md).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { z } from "zod";
import { newCallId } from "../audit/call-id.js";
import { digestCapabilities } from "../audit/record.js";
import {
  CAPABILITIES_TYPE,
  CAPABILITY_LIMITS,
  CapabilityDetail,
  type CapabilityLayer,
  capabilityLayer,
} from "../config/capabilities.js";
import { AgentName } from "../config/clients.js";
import { safeText } from "../config/fields.js";
import { type TenantConfig, Tier } from "../config/policy.js";
import { delegationOf, mintDelegation } from "../context/delegation.js";
import { newTraceId, traceIdOf } from "../context/trace.js";
import { OnbehalfError } from "../errors.js";
import { capabilityErrors } from "../policy/capabilities.js";
import { directoryCap, issuerRefusal } from "../policy/decide.js";
import type { ServerContext } from "./context.js";
import { describeIssues } from "./http.js";
import { type ClientAuth, ClientAuthenticator } from "./oauth-clients.js";
import { noStore, oauthError, sendTokenError } from "./oauth-errors.js";

export const TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange";
export const ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token";
/** The token types a subject or actor token may be given as: an access token, or any JWT. */
const TOKEN_TYPES: ReadonlySet<string> = new Set([ACCESS_TOKEN_TYPE, "urn:ietf:params:oauth:token-type:jwt"]);
/** RFC 6749 §3.3: scope tokens are printable ASCII without space, `"` or `\`, separated by spaces. */
const SCOPE = /^ *(?:[\x21\x23-\x5b\x5d-\x7e]+(?: +[\x21\x23-\x5b\x5d-\x7e]+)* *)?$/;

const TokenBody = z.strictObject({
  grant_type: z.string(),
  subject_token: z.string().min(1).optional(),
  subject_token_type: z.string().optional(),
  actor: AgentName.optional(),
  subject_actor: AgentName.optional(),
  actor_token: z.string().min(1).optional(),
  actor_token_type: z.string().optional(),
  scope: z.string().max(4096).optional(),
  tier: Tier.optional(),
  /** With `subject_actor`: that agent's tier (default: `tier`). A delegation token's hops have theirs signed. */
  subject_tier: Tier.optional(),
  /** The run's trace id (else the `traceparent` header's, the subject delegation token's, or a new one). */
  trace_id: safeText(200).optional(),
  requested_token_type: z.string().optional(),
  /** RFC 9396: a JSON array (a JSON string of one in a form body) of capability sets for the new hop. */
  authorization_details: z
    .union([z.string().max(65_536), z.array(z.unknown()).max(CAPABILITY_LIMITS.layers)])
    .optional(),
  audience: safeText(2000).optional(),
  resource: safeText(2000).optional(),
  // RFC 6749 §2.3 client authentication, and a public client's id
  client_id: z.string().min(1).max(200).optional(),
  client_secret: z.string().min(1).max(1000).optional(),
  client_assertion_type: z.string().max(200).optional(),
  client_assertion: z.string().min(1).max(16_000).optional(),
});
type TokenBody = z.output<typeof TokenBody>;

/** The token endpoint's URL, for client assertions' `aud` (the issuer is accepted too). */
export type TokenEndpointUrl = () => string;

export function tokenRoutes(app: FastifyInstance, ctx: ServerContext, endpoint: TokenEndpointUrl): void {
  const clients = new ClientAuthenticator(
    (key, ttlMs) => ctx.state.claimOnce(key, ttlMs),
    () => ctx.gov.now(),
  );
  app.post("/v1/token", async (req, reply) => {
    try {
      return await exchange(ctx, clients, endpoint, req, reply);
    } catch (e) {
      return sendTokenError(reply, e, ClientAuthenticator.triedBasic(req));
    }
  });
}

/** The request's parameters, each problem an OAuth error that says which parameter and how to fix it. */
function parameters(raw: unknown): TokenBody {
  if (raw === undefined || raw === null || typeof raw !== "object") {
    throw oauthError(
      "invalid_request",
      "the request needs a body: application/x-www-form-urlencoded (or JSON) token request parameters",
    );
  }
  const parsed = TokenBody.safeParse(raw);
  if (!parsed.success)
    throw oauthError("invalid_request", `invalid request: ${describeIssues(parsed.error)}`);
  const body = parsed.data;
  if (body.grant_type !== TOKEN_EXCHANGE) {
    throw oauthError(
      "unsupported_grant_type",
      `unsupported grant_type ${body.grant_type}: use ${TOKEN_EXCHANGE}`,
    );
  }
  if (body.subject_token !== undefined && !TOKEN_TYPES.has(body.subject_token_type ?? "")) {
    throw oauthError(
      "invalid_request",
      body.subject_token_type === undefined
        ? `subject_token_type is required with subject_token (RFC 8693): ${ACCESS_TOKEN_TYPE}`
        : `subject_token_type ${body.subject_token_type} is not supported: use ${ACCESS_TOKEN_TYPE}`,
    );
  }
  if (body.actor_token !== undefined && !TOKEN_TYPES.has(body.actor_token_type ?? "")) {
    throw oauthError(
      "invalid_request",
      body.actor_token_type === undefined
        ? `actor_token_type is required with actor_token (RFC 8693): ${ACCESS_TOKEN_TYPE}`
        : `actor_token_type ${body.actor_token_type} is not supported: use ${ACCESS_TOKEN_TYPE}`,
    );
  }
  if (body.actor_token_type !== undefined && body.actor_token === undefined) {
    throw oauthError("invalid_request", "actor_token_type is given without actor_token");
  }
  if (body.requested_token_type !== undefined && body.requested_token_type !== ACCESS_TOKEN_TYPE) {
    throw oauthError("invalid_request", `requested_token_type must be ${ACCESS_TOKEN_TYPE}`);
  }
  if (body.scope !== undefined && !SCOPE.test(body.scope)) {
    throw oauthError(
      "invalid_scope",
      "scope is space-separated scope tokens (printable ASCII, no quotes or backslashes)",
    );
  }
  return body;
}

async function exchange(
  ctx: ServerContext,
  clients: ClientAuthenticator,
  endpoint: TokenEndpointUrl,
  req: FastifyRequest,
  reply: FastifyReply,
) {
  const body = parameters(req.body);
  const client = await clients.authenticate(req, body, ctx.gov.config, [endpoint(), ctx.issuer]);
  for (const target of [body.audience, body.resource]) {
    if (target !== undefined && target !== ctx.issuer) {
      throw oauthError(
        "invalid_target",
        `onbehalf issues delegation tokens for itself only: audience and resource may only be ${ctx.issuer}`,
      );
    }
  }
  // RFC 8693 puts the subject token in the body; a bearer subject in the Authorization header is our extension.
  const bearer = /^bearer\s/i.test(req.headers.authorization ?? "") ? req.headers.authorization : undefined;
  const subjectToken = body.subject_token ?? bearer;
  if (subjectToken === undefined) {
    throw oauthError("invalid_request", "subject_token is required: the token being exchanged");
  }
  let principal: Awaited<ReturnType<typeof ctx.gov.verify>>;
  try {
    principal = await ctx.gov.verify(subjectToken);
  } catch (e) {
    throw oauthError("invalid_request", `the subject_token is not acceptable: ${(e as Error).message}`);
  }
  const delegation = principal.issuer === ctx.issuer ? delegationOf(principal) : null;
  if ((body.actor === undefined) === (body.actor_token === undefined)) {
    throw oauthError(
      "invalid_request",
      "name the agent being delegated to: give actor (its name) or actor_token, not both",
    );
  }
  // A human's own token says nothing of the agent holding it: `subject_actor` names it, so the chain starts
  // there. A delegation token's chain is signed already and is not to be rewritten.
  if (delegation !== null && (body.subject_actor !== undefined || body.subject_tier !== undefined)) {
    throw oauthError(
      "invalid_request",
      "subject_actor and subject_tier are only for a user's own token: the subject is a delegation token, whose chain is signed already",
    );
  }
  const actor = body.actor ?? (await actorName(ctx, body.actor_token!));
  const traceId = body.trace_id ?? traceIdOf(req.headers.traceparent) ?? delegation?.traceId ?? newTraceId();
  const refused = async (
    reasonCode: "tenant_mismatch" | "unauthenticated" | "permission_deny",
    reason: string,
  ) => {
    const seq = ctx.gov.recordEvent({
      kind: "delegation",
      tenant: principal.tenant,
      user: principal.user,
      email: principal.email,
      agent: actor,
      tier: body.tier ?? null,
      chain: [...(delegation?.chain ?? []), actor],
      tool: null,
      args_digest: null,
      args: clientArgs(client),
      decision: "deny",
      reason_code: reasonCode,
      reason,
      rule: null,
      outcome: "none",
      trace_id: traceId,
      call_id: newCallId(),
    });
    await ctx.gov.auditLog.acknowledged(seq).catch(() => {});
  };
  // No delegation for a tenant this token's issuer may not vouch for (refused, and audited as such).
  const tenant = principal.tenant === null ? undefined : ctx.gov.policy.tenants.get(principal.tenant);
  const unbound = tenant === undefined ? null : issuerRefusal(tenant, principal);
  if (unbound !== null) {
    await refused("tenant_mismatch", unbound);
    throw new OnbehalfError("ERR_POLICY_DENIED", `tenant_mismatch: ${unbound}`);
  }
  const subjectChain =
    delegation?.chain ??
    (body.subject_actor === undefined || body.subject_actor === actor ? [] : [body.subject_actor]);
  // The new hop may name any tier: every hop's tier is signed into the chain and a call is decided under each,
  // the strictest winning, so another tier can only narrow what the run may do.
  const tier = body.tier ?? "subagent";
  const subjectTiers = delegation?.tiers ?? subjectChain.map(() => body.subject_tier ?? tier);
  const vouching = client.kind === "authenticated" ? client.clientId : null;
  const subjectClients = delegation?.clients ?? subjectChain.map(() => vouching);
  const tenantConfig = ctx.gov.config.tenants.find((t) => t.id === principal.tenant);
  const clientRefusal = clientProblem(client, tenantConfig, principal.tenant, {
    agents: [...(delegation === null ? subjectChain : []), actor],
    tiers: [...(delegation === null ? subjectTiers : []), tier],
    subjectClients,
  });
  if (clientRefusal !== null) {
    await refused(
      clientRefusal.error === "invalid_client" ? "unauthenticated" : "permission_deny",
      clientRefusal.reason,
    );
    throw oauthError(clientRefusal.error, clientRefusal.reason);
  }
  const requested = body.scope === undefined ? undefined : body.scope.split(" ").filter((s) => s !== "");
  const subjectScopes = new Set(directoryCap(ctx.gov.policy, principal, new Set(principal.scopes)));
  // The subject's signed capabilities stay; the new hop's only add layers (a call must pass every one).
  const added = requestedCapabilities(actor, body.authorization_details);
  const capabilities = [...(delegation?.capabilities ?? []), ...added];
  const minted = mintDelegation(
    ctx.key,
    ctx.issuer,
    {
      principal,
      chain: subjectChain,
      tiers: subjectTiers,
      scopes: subjectScopes,
      traceId,
      clients: subjectClients,
      capabilities,
    },
    actor,
    requested,
    tier,
    ctx.gov.now(),
    undefined,
    vouching,
  );
  const dropped = requested === undefined ? [] : requested.filter((s) => !minted.scopes.includes(s));
  const recorded = ctx.gov.recordEvent({
    kind: "delegation",
    tenant: principal.tenant,
    user: principal.user,
    email: principal.email,
    agent: actor,
    tier,
    chain: minted.chain,
    tool: null,
    args_digest: null,
    args: {
      requested: requested ?? null,
      granted: minted.scopes,
      dropped,
      ...clientArgs(client),
      // per agent of the chain, the registered client that vouched for it (null: none did)
      clients: minted.clients,
      ...(added.length === 0 ? {} : { capabilities_added: added }),
    },
    decision: "allow",
    reason_code: "ok",
    reason:
      (dropped.length === 0
        ? `delegated to ${actor}`
        : `delegated to ${actor}; not granted (the subject does not hold them): ${dropped.join(" ")}`) +
      (minted.tiers.length > 1 ? ` (tiers ${minted.tiers.join(" > ")})` : "") +
      (vouching === null ? "" : ` (client ${vouching} authenticated)`),
    rule: null,
    outcome: "none",
    trace_id: traceId,
    call_id: newCallId(),
    ...(capabilities.length === 0 ? {} : { capabilities: digestCapabilities(capabilities) }),
  });
  await ctx.gov.auditLog.acknowledged(recorded); // no token leaves before its record is on disk
  noStore(reply);
  return {
    access_token: minted.token,
    issued_token_type: ACCESS_TOKEN_TYPE,
    token_type: "Bearer",
    expires_in: minted.expiresIn,
    scope: minted.scopes.join(" "),
    trace_id: traceId,
    // RFC 9396 §7: what the token carries (every layer, the subject's included)
    ...(capabilities.length === 0
      ? {}
      : { authorization_details: minted.capabilities.map((l) => ({ type: CAPABILITIES_TYPE, ...l })) }),
  };
}

/**
 * The capability layers a request's `authorization_details` add for `actor`. Refused (400,
 * `invalid_authorization_details`): a string that is not a JSON array, an entry of another type, an entry that
 * does not validate, a condition that does not compile.
 */
function requestedCapabilities(actor: string, details: string | unknown[] | undefined): CapabilityLayer[] {
  if (details === undefined) return [];
  const refuse = (why: string) =>
    oauthError("invalid_authorization_details", `invalid authorization_details: ${why}`);
  let entries: unknown = details;
  if (typeof details === "string") {
    try {
      entries = JSON.parse(details);
    } catch {
      throw refuse("not JSON");
    }
  }
  if (!Array.isArray(entries) || entries.length > CAPABILITY_LIMITS.layers) {
    throw refuse(`a JSON array of at most ${CAPABILITY_LIMITS.layers} entries`);
  }
  const layers: CapabilityLayer[] = [];
  for (const entry of entries) {
    const parsed = CapabilityDetail.safeParse(entry);
    if (!parsed.success) {
      const type = (entry as { type?: unknown } | null)?.type;
      throw refuse(
        type === CAPABILITIES_TYPE
          ? parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")
          : `unknown type ${JSON.stringify(type ?? null)}: this server knows ${CAPABILITIES_TYPE}`,
      );
    }
    const { type: _type, ...set } = parsed.data;
    const layer = capabilityLayer(actor, set);
    if ("error" in layer) throw refuse(layer.error);
    layers.push(layer);
  }
  const bad = capabilityErrors(layers);
  if (bad !== null) throw refuse(bad);
  return layers;
}

/** Who asked, for the audit: the client id and whether it authenticated. */
function clientArgs(client: ClientAuth): Record<string, unknown> {
  return client.kind === "anonymous"
    ? { client_id: null, client_authenticated: false }
    : { client_id: client.clientId, client_authenticated: client.kind === "authenticated" };
}

/**
 * Why a client may not ask for this delegation, if it may not: a tenant that requires client authentication
 * takes only registered, authenticated clients of its own whose registration lists every agent and tier it
 * names, and a subject whose every hop a registered client vouched for; a registered client is held to its
 * registration in any tenant.
 */
function clientProblem(
  client: ClientAuth,
  tenant: TenantConfig | undefined,
  tenantId: string | null,
  asked: { agents: readonly string[]; tiers: readonly string[]; subjectClients: readonly (string | null)[] },
): { error: "invalid_client" | "invalid_request"; reason: string } | null {
  const required = tenant?.require_client_auth === true;
  if (client.kind !== "authenticated") {
    if (!required) return null;
    return {
      error: "invalid_client",
      reason: `tenant ${tenantId} requires agent runtimes to authenticate: register this client under the tenant's clients and authenticate as it`,
    };
  }
  if (client.tenant !== tenantId) {
    return {
      error: "invalid_request",
      reason: `client ${client.clientId} is registered for tenant ${client.tenant}, not for the subject's tenant ${tenantId}`,
    };
  }
  const agent = asked.agents.find((a) => !client.client.agents.includes(a));
  if (agent !== undefined) {
    return {
      error: "invalid_request",
      reason: `client ${client.clientId} may not act as agent ${agent} (it may act as ${client.client.agents.join(", ")})`,
    };
  }
  const allowedTiers = client.client.tiers;
  const tier =
    allowedTiers === undefined ? undefined : asked.tiers.find((t) => !allowedTiers.includes(t as never));
  if (tier !== undefined) {
    return { error: "invalid_request", reason: `client ${client.clientId} may not take tier ${tier}` };
  }
  if (required && asked.subjectClients.includes(null)) {
    return {
      error: "invalid_request",
      reason: `tenant ${tenantId} requires every agent of a chain to be vouched for by a registered client; the subject token's chain has agents none vouched for`,
    };
  }
  return null;
}

/** The agent an actor token names: its verified subject (an agent's own client credential, say). */
async function actorName(ctx: ServerContext, actorToken: string): Promise<string> {
  let actor: Awaited<ReturnType<typeof ctx.gov.verify>>;
  try {
    actor = await ctx.gov.verify(actorToken);
  } catch (e) {
    throw oauthError("invalid_request", `the actor_token is not acceptable: ${(e as Error).message}`);
  }
  const name = AgentName.safeParse(actor.sub);
  if (!name.success)
    throw oauthError("invalid_request", "the actor token's subject is not a usable agent name");
  return name.data;
}
