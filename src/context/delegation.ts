/**
 * Delegation tokens: a run context carried across processes, signed by onbehalf (RFC 8693 token exchange).
 *
 * The token says who the human is (`sub` = their policy id), in which tenant, with which scopes (already
 * narrowed by every hop), in which tier, and which agents act for them: RFC 8693 nested `act` claims, the
 * current actor outermost. Because onbehalf signs it, the chain comes from the signature, never from a
 * request body. It is verified like any other token, by the identity verifier, against onbehalf's own key.
 */
import { randomUUID } from "node:crypto";
import { type CapabilityLayer, detailsOf, layersOfClaim } from "../config/capabilities.js";
import { type IssuerConfig, IssuerConfig as IssuerSchema } from "../config/issuer.js";
import { TIERS, type Tier } from "../config/policy.js";
import { OnbehalfError } from "../errors.js";
import type { PublicJwk, SigningKey } from "../identity/keys.js";
import { signJwt } from "../identity/keys.js";
import type { Principal } from "../identity/principal.js";
import { narrowScopes } from "../identity/scopes.js";

/** Who is delegating: the human, the agents so far (none for a user's own token), their scopes. */
export interface DelegationSubject {
  readonly principal: Principal;
  readonly chain: readonly string[];
  /** The tier of each agent of `chain`. */
  readonly tiers: readonly Tier[];
  readonly scopes: ReadonlySet<string>;
  /** The run's trace id, kept by the delegation. */
  readonly traceId: string;
  /** The registered client that vouched for each agent of `chain` (null: none did); default none. */
  readonly clients?: readonly (string | null)[];
  /**
   * The task capabilities the new token carries (RFC 9396 `authorization_details`): the subject's layers, plus
   * the delegation's own if it states some. Layers are only ever added, so a delegation only narrows.
   */
  readonly capabilities?: readonly CapabilityLayer[];
}

/** What a delegation token says of its run: the chain, each hop's tier (the last one the caller's), the trace. */
export interface DelegationClaims {
  readonly chain: string[];
  readonly tier: Tier;
  readonly tiers: Tier[];
  /** Null for a token minted before tokens carried one. */
  readonly traceId: string | null;
  /** Per agent of `chain`: the registered client that authenticated when it was delegated to, else null. */
  readonly clients: (string | null)[];
  /** The task capabilities signed into the token, outermost first (none: empty). */
  readonly capabilities: readonly CapabilityLayer[];
}

/** Lifetime of a delegation token unless asked for less. */
export const DELEGATION_TTL_SECONDS = 600;
/** The most hops a chain may have; a longer one is refused (a loop, most likely). */
export const MAX_CHAIN = 32;

/** RFC 8693 actor claim, nested: the current actor outermost; `client_id` when a registered client vouched. */
export interface ActClaim {
  readonly sub: string;
  readonly client_id?: string;
  readonly act?: ActClaim;
}

export interface MintedDelegation {
  readonly token: string;
  readonly expiresIn: number;
  readonly scopes: readonly string[];
  readonly chain: readonly string[];
  readonly tiers: readonly Tier[];
  readonly clients: readonly (string | null)[];
  readonly capabilities: readonly CapabilityLayer[];
}

/**
 * The issuer config under which onbehalf verifies its own delegation tokens: its public key inline, EdDSA
 * only, `sub` as the user id as is (no prefix), tenant, scope, email and roles from their claims.
 *
 * @example
 * createIdentity({ issuers: [...configured, delegationIssuerConfig(url, key.publicJwk)] });
 */
export function delegationIssuerConfig(issuer: string, publicJwk: PublicJwk): IssuerConfig {
  return IssuerSchema.parse({
    issuer,
    audience: issuer,
    preset: "generic",
    jwks: { keys: [{ ...publicJwk }] },
    algorithms: [publicJwk.alg],
    claims: { subject: "sub", tenant: "tenant", scopes: "scope", email: "email", roles: "roles" },
    user_prefix: "",
    // the keys are inline: nothing is fetched from this URL, so plain http is harmless
    allow_insecure_http: true,
  });
}

/**
 * Mint a delegation token for `subject` extended by `actor`, asking for `requested` scopes (granted:
 * requested ∩ the subject's, never wider; `undefined` keeps the subject's). `actorClient`: the registered
 * client that authenticated asking for it, signed into the new hop's `act` as `client_id`.
 *
 * @example
 * const d = mintDelegation(key, "https://onbehalf.example", subject, "billing-agent", ["refunds:write"], "subagent", nowMs);
 */
export function mintDelegation(
  key: SigningKey,
  issuer: string,
  subject: DelegationSubject,
  actor: string,
  requested: readonly string[] | undefined,
  tier: Tier,
  nowMs: number,
  ttlSeconds = DELEGATION_TTL_SECONDS,
  actorClient: string | null = null,
): MintedDelegation {
  const chain = [...subject.chain, actor];
  const tiers = [...subject.tiers, tier];
  const clients = [...(subject.clients ?? subject.chain.map(() => null)), actorClient];
  if (tiers.length !== chain.length) {
    throw new OnbehalfError("ERR_INVALID_ARGUMENT", "a delegation names one tier per agent of its chain");
  }
  if (chain.length > MAX_CHAIN) {
    throw new OnbehalfError(
      "ERR_INVALID_ARGUMENT",
      `a delegation chain may have at most ${MAX_CHAIN} agents`,
    );
  }
  const scopes = narrowScopes(subject.scopes, requested);
  const now = Math.floor(nowMs / 1000);
  const exp = Math.min(
    now + Math.max(1, Math.min(ttlSeconds, DELEGATION_TTL_SECONDS)),
    subject.principal.exp,
  );
  if (exp <= now) throw new OnbehalfError("ERR_TOKEN_EXPIRED", "the subject token has expired");
  const p = subject.principal;
  const capabilities = subject.capabilities ?? [];
  const token = signJwt(
    key,
    {
      iss: issuer,
      aud: issuer,
      sub: p.user,
      iat: now,
      exp,
      jti: randomUUID(),
      tenant: p.tenant,
      scope: scopes.join(" "),
      tier,
      // every hop's tier, signed: a call is decided under each, so no hop can move the run to a looser one
      tiers,
      trace_id: subject.traceId,
      act: actClaim(chain, clients),
      ...(p.email === null ? {} : { email: p.email }),
      ...(p.roles.length === 0 ? {} : { roles: p.roles }),
      // where and as whom the human was first verified, with every claim that issuer signed: rules on the
      // human's claims and issuer hold for the agents acting for them (a nested hop passes them on unchanged)
      obo_issuer: p.origin ?? p.issuer,
      obo_sub: p.originSub ?? p.sub,
      obo_claims: p.originClaims ?? p.claims,
      // RFC 9396: the task's capabilities, every layer of every hop, signed (docs/capabilities.md)
      ...(capabilities.length === 0 ? {} : { authorization_details: detailsOf(capabilities) }),
    },
    { typ: "at+jwt" },
  );
  return { token, expiresIn: exp - now, scopes, chain, tiers, clients, capabilities };
}

/** The chain in a delegation token's claims (outermost agent first), each hop's tier, and its trace. */
export function delegationOf(principal: Principal): DelegationClaims {
  const chain: string[] = [];
  const clients: (string | null)[] = [];
  let act = principal.claims["act"];
  while (act !== undefined) {
    const client = (act as ActClaim | null)?.client_id;
    if (
      act === null ||
      typeof act !== "object" ||
      typeof (act as ActClaim).sub !== "string" ||
      (client !== undefined && typeof client !== "string") ||
      chain.length >= MAX_CHAIN
    ) {
      throw new OnbehalfError("ERR_TOKEN_CLAIM_INVALID", "the delegation token's act claim is malformed");
    }
    chain.unshift((act as ActClaim).sub);
    clients.unshift(client ?? null);
    act = (act as ActClaim).act;
  }
  const { tier, tiers: signed, trace_id: traceId } = principal.claims;
  if (chain.length === 0 || !isTier(tier)) {
    throw new OnbehalfError("ERR_TOKEN_CLAIM_INVALID", "the delegation token has no agent chain or tier");
  }
  // Tokens minted before hops carried their tier had one tier for the whole chain.
  const tiers = signed === undefined ? chain.map(() => tier) : signed;
  if (
    !Array.isArray(tiers) ||
    tiers.length !== chain.length ||
    !tiers.every(isTier) ||
    tiers[tiers.length - 1] !== tier ||
    (traceId !== undefined && typeof traceId !== "string")
  ) {
    throw new OnbehalfError("ERR_TOKEN_CLAIM_INVALID", "the delegation token's tiers or trace are malformed");
  }
  const capabilities = layersOfClaim(principal.claims["authorization_details"]);
  if ("error" in capabilities) {
    throw new OnbehalfError(
      "ERR_TOKEN_CLAIM_INVALID",
      `the delegation token's authorization_details are malformed: ${capabilities.error}`,
    );
  }
  return { chain, tier, tiers, traceId: traceId ?? null, clients, capabilities };
}

function isTier(value: unknown): value is Tier {
  return typeof value === "string" && (TIERS as readonly string[]).includes(value);
}

/** Nest a chain into `act` claims, the last (current) agent outermost, each with its vouching client if any. */
export function actClaim(
  chain: readonly string[],
  clients: readonly (string | null)[] = [],
): ActClaim | undefined {
  let act: ActClaim | undefined;
  for (const [i, agent] of chain.entries()) {
    const client = clients[i];
    act = {
      sub: agent,
      ...(client === null || client === undefined ? {} : { client_id: client }),
      ...(act === undefined ? {} : { act }),
    };
  }
  return act;
}
