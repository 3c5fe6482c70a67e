/**
 * `POST /v1/token`: RFC 8693 token exchange. A user's token (or an earlier delegation token) is exchanged for
 * a delegation token naming one more agent. The granted scope is the requested scope ∩ the subject's: an
 * over-reaching request is attenuated, not refused, so a later over-reaching call is denied with the whole
 * chain in the audit; the answer's `scope` and the audit record say what was dropped. With a user's own token,
 * `subject_actor` names the agent holding it, so the chain starts with that agent.
 *
 * `authorization_details` (RFC 9396, of the type `urn:onbehalf:capabilities`) states the new hop's task
 * capabilities: they are signed into the token on top of the subject token's own, never in their place, so a call
 * under the new token must pass both (docs/capabilities.md).
 */
import type { FastifyInstance } from "fastify";
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
import { safeText } from "../config/fields.js";
import { Tier } from "../config/policy.js";
import { delegationOf, mintDelegation } from "../context/delegation.js";
import { newTraceId, traceIdOf } from "../context/trace.js";
import { OnbehalfError } from "../errors.js";
import { capabilityErrors } from "../policy/capabilities.js";
import { directoryCap, issuerRefusal } from "../policy/decide.js";
import type { ServerContext } from "./context.js";
import { parseBody } from "./http.js";

export const TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token";
const AGENT_NAME = z
  .string()
  .min(1)
  .max(200)
  .regex(/^[^\s\p{Cc}\p{Cs}]+$/u, "an agent name has no spaces, control characters or unpaired surrogates");
/** RFC 6749 §3.3: scope tokens are printable ASCII without space, `"` or `\`, separated by spaces. */
const SCOPE = z
  .string()
  .max(4096)
  .regex(
    /^ *(?:[\x21\x23-\x5b\x5d-\x7e]+(?: +[\x21\x23-\x5b\x5d-\x7e]+)* *)?$/,
    "scope is space-separated scope tokens (printable ASCII, no quotes or backslashes)",
  );

const TokenBody = z.strictObject({
  grant_type: z.string(),
  subject_token: z.string().min(1).optional(),
  subject_token_type: z.string().optional(),
  actor: AGENT_NAME.optional(),
  subject_actor: AGENT_NAME.optional(),
  actor_token: z.string().min(1).optional(),
  actor_token_type: z.string().optional(),
  scope: SCOPE.optional(),
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
});

export function tokenRoutes(app: FastifyInstance, ctx: ServerContext): void {
  app.post("/v1/token", async (req, reply) => {
    const body = parseBody(TokenBody, req.body);
    if (body.grant_type !== TOKEN_EXCHANGE) {
      throw new OnbehalfError("ERR_INVALID_ARGUMENT", `unsupported grant_type: use ${TOKEN_EXCHANGE}`, {
        oauth: "invalid_request",
      });
    }
    if (body.requested_token_type !== undefined && body.requested_token_type !== ACCESS_TOKEN_TYPE) {
      throw new OnbehalfError("ERR_INVALID_ARGUMENT", `requested_token_type must be ${ACCESS_TOKEN_TYPE}`);
    }
    const subjectToken = body.subject_token ?? req.headers.authorization;
    const principal = await ctx.gov.verify(subjectToken);
    const delegation = principal.issuer === ctx.issuer ? delegationOf(principal) : null;
    if ((body.actor === undefined) === (body.actor_token === undefined)) {
      throw new OnbehalfError(
        "ERR_INVALID_ARGUMENT",
        "name the agent being delegated to: give actor (its name) or actor_token, not both",
      );
    }
    // A human's own token says nothing of the agent holding it: `subject_actor` names it, so the chain starts
    // there. A delegation token's chain is signed already and is not to be rewritten.
    if (delegation !== null && (body.subject_actor !== undefined || body.subject_tier !== undefined)) {
      throw new OnbehalfError(
        "ERR_INVALID_ARGUMENT",
        "subject_actor and subject_tier are only for a user's own token: the subject is a delegation token, whose chain is signed already",
      );
    }
    const actor = body.actor ?? (await actorName(ctx, body.actor_token!));
    const traceId =
      body.trace_id ?? traceIdOf(req.headers.traceparent) ?? delegation?.traceId ?? newTraceId();
    // No delegation for a tenant this token's issuer may not vouch for (refused, and audited as such).
    const tenant = principal.tenant === null ? undefined : ctx.gov.policy.tenants.get(principal.tenant);
    const unbound = tenant === undefined ? null : issuerRefusal(tenant, principal);
    if (unbound !== null) {
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
        args: null,
        decision: "deny",
        reason_code: "tenant_mismatch",
        reason: unbound,
        rule: null,
        outcome: "none",
        trace_id: traceId,
        call_id: newCallId(),
      });
      await ctx.gov.auditLog.acknowledged(seq).catch(() => {});
      throw new OnbehalfError("ERR_POLICY_DENIED", `tenant_mismatch: ${unbound}`);
    }
    const subjectChain =
      delegation?.chain ??
      (body.subject_actor === undefined || body.subject_actor === actor ? [] : [body.subject_actor]);
    const requested = body.scope === undefined ? undefined : body.scope.split(" ").filter((s) => s !== "");
    // The new hop may name any tier: every hop's tier is signed into the chain and a call is decided under each,
    // the strictest winning, so another tier can only narrow what the run may do.
    const tier = body.tier ?? "subagent";
    const subjectTiers = delegation?.tiers ?? subjectChain.map(() => body.subject_tier ?? tier);
    const subjectScopes = new Set(directoryCap(ctx.gov.policy, principal, new Set(principal.scopes)));
    // The subject's signed capabilities stay; the new hop's only add layers (a call must pass every one).
    const added = requestedCapabilities(actor, body.authorization_details);
    const capabilities = [...(delegation?.capabilities ?? []), ...added];
    const minted = mintDelegation(
      ctx.key,
      ctx.issuer,
      { principal, chain: subjectChain, tiers: subjectTiers, scopes: subjectScopes, traceId, capabilities },
      actor,
      requested,
      tier,
      ctx.gov.now(),
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
        ...(added.length === 0 ? {} : { capabilities_added: added }),
      },
      decision: "allow",
      reason_code: "ok",
      reason:
        (dropped.length === 0
          ? `delegated to ${actor}`
          : `delegated to ${actor}; not granted (the subject does not hold them): ${dropped.join(" ")}`) +
        (minted.tiers.length > 1 ? ` (tiers ${minted.tiers.join(" > ")})` : ""),
      rule: null,
      outcome: "none",
      trace_id: traceId,
      call_id: newCallId(),
      ...(capabilities.length === 0 ? {} : { capabilities: digestCapabilities(capabilities) }),
    });
    await ctx.gov.auditLog.acknowledged(recorded); // no token leaves before its record is on disk
    reply.header("cache-control", "no-store");
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
  });
}

/**
 * The capability layers a request's `authorization_details` add for `actor`. Refused (400,
 * `invalid_authorization_details`): a string that is not a JSON array, an entry of another type, an entry that
 * does not validate, a condition that does not compile.
 */
function requestedCapabilities(actor: string, details: string | unknown[] | undefined): CapabilityLayer[] {
  if (details === undefined) return [];
  const refuse = (why: string) =>
    new OnbehalfError("ERR_INVALID_ARGUMENT", `invalid authorization_details: ${why}`, {
      oauth: "invalid_authorization_details",
    });
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

/** The agent an actor token names: its verified subject (an agent's own client credential, say). */
async function actorName(ctx: ServerContext, actorToken: string): Promise<string> {
  const actor = await ctx.gov.verify(actorToken);
  const name = AGENT_NAME.safeParse(actor.sub);
  if (!name.success)
    throw new OnbehalfError("ERR_INVALID_ARGUMENT", "the actor token's subject is not a usable agent name");
  return name.data;
}
