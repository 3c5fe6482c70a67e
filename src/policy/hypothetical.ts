/**
 * Decision inputs for calls nobody is making right now: `policy explain`'s call, the console's who-can-do-what
 * matrix, and the what-if replay of audited calls. Each holds a principal built as a token from a trusted issuer
 * of the tenant would give it, so the same `decide()` as the hot path answers.
 */
import { TIERS, type Tier } from "../config/policy.js";
import type { Principal } from "../identity/principal.js";
import type { CompiledPolicy } from "./compile.js";
import type { DecisionInput } from "./decide.js";

/** A hypothetical call. `chain` elements are `agent` or `agent:tier` (a hop in another tier than `tier`). */
export interface CallSpec {
  readonly user: string;
  readonly tenant: string | null;
  readonly requestedTenant: string | undefined;
  readonly scopes: readonly string[];
  readonly roles: readonly string[];
  readonly email: string | null;
  readonly tool: string;
  readonly tier: Tier;
  readonly chain: readonly string[];
  readonly args: unknown;
  /** Size of the serialized arguments. */
  readonly argsBytes: number;
  readonly issuer: string | undefined;
  /** Milliseconds since the epoch (default now). */
  readonly now?: number;
  /** Only the layers, no rules (for a call without real arguments). */
  readonly listing?: boolean;
}

/**
 * A decision input for a call by a user holding exactly `scopes`, with a token from `issuer` (default: the first
 * issuer that may vouch for the token's tenant).
 *
 * @example
 * decide(policy, hypotheticalInput({ user: "alice", tenant: "acme", tool: "get_customer", ... }, policy));
 */
export function hypotheticalInput(spec: CallSpec, policy: CompiledPolicy): DecisionInput {
  const bound = spec.tenant === null ? undefined : policy.tenants.get(spec.tenant)?.issuers;
  const hops = spec.chain.map((hop) => hopOf(hop, spec.tier));
  const chain = hops.map((h) => h.agent);
  const tiers = hops.map((h) => h.tier);
  const principal: Principal = {
    user: spec.user,
    sub: spec.user,
    issuer: spec.issuer ?? (bound === undefined || bound === null ? "policy-test" : [...bound][0]!),
    tenant: spec.tenant,
    email: spec.email,
    scopes: spec.scopes,
    roles: spec.roles,
    exp: 0,
    claims: {},
  };
  return {
    principal,
    tenant: spec.requestedTenant,
    agent: chain[chain.length - 1] ?? "agent",
    tier: tiers[tiers.length - 1] ?? spec.tier,
    tiers,
    chain,
    scopes: new Set(spec.scopes),
    tool: spec.tool,
    args: spec.args,
    argsBytes: spec.argsBytes,
    now: spec.now ?? Date.now(),
    ...(spec.listing === true ? { listing: true } : {}),
  };
}

const TIER_NAMES: ReadonlySet<string> = new Set(TIERS);

/** A chain element: `agent`, or `agent:tier` for a hop in another tier than the call's. */
function hopOf(hop: string, tier: Tier): { agent: string; tier: Tier } {
  const at = hop.lastIndexOf(":");
  const named = at === -1 ? "" : hop.slice(at + 1);
  return TIER_NAMES.has(named) ? { agent: hop.slice(0, at), tier: named as Tier } : { agent: hop, tier };
}
