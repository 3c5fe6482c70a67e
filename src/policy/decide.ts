/**
 * `decide()`: one tool call against the compiled policy, returned as a plain record. It never throws and
 * never allows on doubt: anything it cannot establish is a deny with a reason code.
 *
 * Order of checks (the first failure decides):
 *  1. arguments within the size limit, tool declared                          → error / permission_deny
 *  2. the token's tenant exists, matches the requested one, is configured, and the token's issuer may vouch
 *     for it                                                                     → tenant_mismatch / permission_deny
 *  3. membership: listed (when required) and not disabled                     → not_a_member
 *  4. required scopes ⊆ effective scopes (token ∩ every hop ∩ directory cap)  → missing_scope
 *  4b. the run's task capabilities: every layer grants the tool, one of its grants holds → capability_deny / _error
 *  5. layered permission                                                      → permission_deny / ask
 *  6. rules: a matching deny always wins; then ask; redact adds paths  → rule_deny / ask / error / rule_over_budget
 * Checks 1–4b are the guarantees and hold in shadow mode too; 5–6 are the tenant's policy, which shadow mode
 * evaluates and reports without enforcing. Rate limits are charged by the caller from `buckets`.
 */

import type { CapabilityLayer } from "../config/capabilities.js";
import type { PostTransform, Tier } from "../config/policy.js";
import type { Bucket, Decision, ReasonCode, ShadowVerdict, Verdict } from "../decision.js";
import type { Principal } from "../identity/principal.js";
import { narrowScopes } from "../identity/scopes.js";
import { capabilityRefusal } from "./capabilities.js";
import type { CelActivation } from "./cel.js";
import type { CompiledPolicy, CompiledRule, CompiledTenant, CompiledTool } from "./compile.js";
import { type LayerResolution, resolveLayers } from "./layers.js";

/** Everything a decision depends on. */
export interface DecisionInput {
  readonly principal: Principal;
  /** The tenant the caller names, if any; must equal the token's. */
  readonly tenant: string | undefined;
  readonly agent: string;
  /** The tier of the agent making the call (the innermost hop). */
  readonly tier: Tier;
  /**
   * The tier of every hop of the chain, outermost first (default: `[tier]`). The call is decided under each
   * distinct one and the strictest outcome wins, so a hop into another tier can only ever narrow.
   */
  readonly tiers?: readonly Tier[];
  readonly chain: readonly string[];
  /** The run's scopes: the token's intersected with every delegation hop's. */
  readonly scopes: ReadonlySet<string>;
  readonly tool: string;
  readonly args: unknown;
  /** Size of the serialized arguments. */
  readonly argsBytes: number;
  /** Milliseconds since the epoch. */
  readonly now: number;
  /** Decide only as far as the permission layers (no rules): for listing tools, before there are arguments. */
  readonly listing?: boolean;
  /** The run's task capabilities (layers, outermost first); a call must pass each. Absent or empty: none. */
  readonly capabilities?: readonly CapabilityLayer[];
}

/**
 * Whether a tool could be called by this caller at all: the guarantees and the permission layers, without
 * the rules (they need real arguments) and without rate limits. For listing tools to a client.
 *
 * @example
 * const visible = [...policy.tools.keys()].filter((tool) => listable(policy, { ...input, tool }));
 */
/**
 * Why this principal's issuer may not vouch for the tenant, or null when it may. The issuer that vouched is the
 * principal's `origin` (for onbehalf's delegation tokens, the issuer of the human's first token), else its own.
 *
 * @example
 * issuerRefusal(policy.tenants.get("acme")!, principal); // null, or why not
 */
export function issuerRefusal(tenant: CompiledTenant, principal: Principal): string | null {
  if (tenant.issuers === null) return null;
  const vouched = principal.origin ?? principal.issuer;
  if (tenant.issuers.has(vouched)) return null;
  return `tenant "${tenant.id}" takes its users from ${[...tenant.issuers].join(", ")}; a token of ${vouched} may not vouch for it`;
}

export function listable(
  policy: CompiledPolicy,
  input: Omit<DecisionInput, "args" | "argsBytes" | "listing">,
): boolean {
  return decide(policy, { ...input, args: {}, argsBytes: 0, listing: true }).decision !== "deny";
}

/** A step of the decision, for `policy explain`. */
export interface TraceStep {
  readonly step: string;
  readonly outcome: string;
  readonly detail?: unknown;
}

const NO_BUCKETS: readonly Bucket[] = [];
const NO_PATHS: readonly string[] = [];

/**
 * Decide one call. Pass `trace` to collect the steps (for `policy explain`); the hot path passes nothing.
 *
 * @example
 * const d = decide(policy, { principal, tenant: undefined, agent: "bot", tier: "interactive", chain: ["bot"],
 *   scopes: new Set(principal.scopes), tool: "get_customer", args: { id: "c-1" }, argsBytes: 12, now: Date.now() });
 * d.decision; // "allow" | "deny" | "ask"
 */
export function decide(policy: CompiledPolicy, input: DecisionInput, trace?: TraceStep[]): Decision {
  const tenantId = input.principal.tenant;
  const tenant = tenantId === null ? undefined : policy.tenants.get(tenantId);
  const base = {
    tenant: tenantId,
    mode: tenant?.mode ?? "enforce",
    fail_mode: tenant?.failMode ?? "fail_closed",
  } as const;
  const deny = (reason_code: ReasonCode, reason: string, scopes: readonly string[] = []): Decision => {
    trace?.push({ step: "result", outcome: "deny", detail: { reason_code, reason } });
    return finalDecision(base, "deny", reason_code, reason, null, null, scopes);
  };

  // 1. arguments and tool
  if (input.argsBytes > policy.maxArgsBytes) {
    return deny("error", `arguments are ${input.argsBytes} bytes, over the limit of ${policy.maxArgsBytes}`);
  }
  const tool = policy.tools.get(input.tool);
  if (tool === undefined) {
    return deny("permission_deny", `unknown tool "${input.tool}": declare it under tools: in the config`);
  }
  trace?.push({ step: "tool", outcome: "declared", detail: { required_scopes: tool.requiredScopes } });

  // 2. tenant
  if (tenantId === null) {
    return deny("tenant_mismatch", "the token names no tenant: map one with the issuer's claims.tenant");
  }
  if (input.tenant !== undefined && input.tenant !== tenantId) {
    return deny(
      "tenant_mismatch",
      `the call names tenant "${input.tenant}" but the token is for "${tenantId}"`,
    );
  }
  if (tenant === undefined) return deny("permission_deny", `tenant "${tenantId}" is not configured`);
  const unbound = issuerRefusal(tenant, input.principal);
  if (unbound !== null) return deny("tenant_mismatch", unbound);
  trace?.push({ step: "tenant", outcome: tenantId });

  // 3. membership
  const member = tenant.directory.get(input.principal.user);
  if (member?.disabled === true) return deny("not_a_member", `user is disabled in tenant "${tenantId}"`);
  if (tenant.requireMembership && member === undefined) {
    return deny("not_a_member", `user is not a member of tenant "${tenantId}"`);
  }
  trace?.push({ step: "membership", outcome: member === undefined ? "not listed" : "member" });

  // 4. scopes
  const effective = narrowScopes(input.scopes, member?.scopes);
  const missing = tool.requiredScopes.filter((s) => !effective.includes(s));
  if (missing.length > 0) {
    return deny("missing_scope", `missing scope ${missing.join(", ")} for tool "${tool.name}"`, effective);
  }
  trace?.push({ step: "scopes", outcome: "ok", detail: { effective } });

  // 4b. the task's capabilities: on top of the tenant's policy, never instead of it
  const caps = input.capabilities;
  if (caps !== undefined && caps.length > 0) {
    const refused = capabilityRefusal(
      caps,
      tool.name,
      () => activationOf(input, tenantId, effective),
      input.now,
      input.argsBytes,
      input.listing === true,
      trace,
    );
    if (refused !== null) return deny(refused.reason_code, refused.reason, effective);
  }

  // 5 and 6: the tenant's policy, under the caller's tier and every other tier of its chain
  const others = otherTiers(input);
  if (others !== null) trace?.push({ step: "tier", outcome: input.tier });
  let { layers, verdict } = underTier(tenant, tool, input, effective, trace);
  let buckets = layers.buckets;
  if (others !== null) {
    trace?.push({ step: "verdict", outcome: verdict.decision, detail: { reason: verdict.reason } });
    for (const tier of others) {
      trace?.push({ step: "tier", outcome: tier });
      const under = underTier(tenant, tool, { ...input, tier }, effective, trace);
      const { decision, reason } = under.verdict;
      trace?.push({ step: "verdict", outcome: decision, detail: { reason } });
      buckets = [...buckets, ...under.layers.buckets];
      if (STRICTNESS[under.verdict.decision] > STRICTNESS[verdict.decision]) {
        const { reason } = under.verdict;
        verdict = joined(
          { ...under.verdict, reason: `${reason} (under tier ${tier}, of the chain)` },
          verdict,
        );
        layers = under.layers;
      } else {
        verdict = joined(verdict, under.verdict);
      }
    }
  }
  const decidedLayer = verdict.rule === null ? (layers.decidedBy?.path ?? null) : null;
  if (verdict.decision !== "allow" && tenant.mode === "shadow") {
    trace?.push({ step: "shadow", outcome: `would ${verdict.decision}, allowed` });
    // Shadow mode does not block, but what the policy says about the output (redact, block) still holds.
    const { decision, reason_code, reason, rule } = verdict;
    return {
      ...finalDecision(base, "allow", "ok", `shadow mode: ${verdict.reason}`, null, decidedLayer, effective),
      post_transform: verdict.postTransform,
      redact: verdict.redact,
      buckets,
      shadow: { decision, reason_code, reason, rule },
    };
  }
  trace?.push({ step: "result", outcome: verdict.decision, detail: { reason_code: verdict.reason_code } });
  return {
    ...finalDecision(
      base,
      verdict.decision,
      verdict.reason_code,
      verdict.reason,
      verdict.rule,
      decidedLayer,
      effective,
    ),
    post_transform: verdict.postTransform,
    redact: verdict.redact,
    // An ask is charged too: each opens an approval, and one human must not flood the approvers. That charge is
    // the call's: asked again with its approval, it is not charged twice (see the pipeline).
    buckets: verdict.decision === "deny" ? NO_BUCKETS : buckets,
  };
}

const STRICTNESS: Record<Verdict, number> = { allow: 0, ask: 1, deny: 2 };
const TRANSFORM_STRICTNESS: Record<PostTransform, number> = { audit: 0, redact: 1, block: 2 };

/** The permission layers and the policy's verdict under `input.tier`. */
function underTier(
  tenant: CompiledTenant,
  tool: CompiledTool,
  input: DecisionInput,
  effective: readonly string[],
  trace: TraceStep[] | undefined,
): { layers: LayerResolution; verdict: PolicyVerdict } {
  const layers = resolveLayers(tenant, input.principal.user, tool.name, input.tier);
  trace?.push({
    step: "permission",
    outcome: layers.permission,
    detail: {
      decided_by: layers.decidedBy?.path ?? "no entry (deny)",
      matched: layers.hits.map((h) => h.path),
    },
  });
  const verdict =
    input.listing === true
      ? permissionVerdict(layers)
      : policyVerdict(tenant, tool, layers, input, effective, trace);
  return { layers, verdict };
}

/** The chain's tiers other than the caller's, each once, outermost first; null when there are none. */
function otherTiers(input: DecisionInput): Tier[] | null {
  const tiers = input.tiers;
  if (tiers === undefined) return null;
  let out: Tier[] | null = null;
  for (const t of tiers) {
    if (t === input.tier) continue;
    out ??= [];
    if (!out.includes(t)) out.push(t);
  }
  return out;
}

/** `decisive`'s verdict, with the output as strict as either makes it: the stricter transform, both paths. */
function joined(decisive: PolicyVerdict, other: PolicyVerdict): PolicyVerdict {
  const postTransform =
    TRANSFORM_STRICTNESS[other.postTransform] > TRANSFORM_STRICTNESS[decisive.postTransform]
      ? other.postTransform
      : decisive.postTransform;
  const redact =
    other.redact.length === 0
      ? decisive.redact
      : decisive.redact.length === 0
        ? other.redact
        : [...new Set([...decisive.redact, ...other.redact])];
  return { ...decisive, postTransform, redact };
}

interface PolicyVerdict extends ShadowVerdict {
  readonly postTransform: PostTransform;
  readonly redact: readonly string[];
}

function policyVerdict(
  tenant: CompiledTenant,
  tool: CompiledTool,
  layers: LayerResolution,
  input: DecisionInput,
  effective: readonly string[],
  trace: TraceStep[] | undefined,
): PolicyVerdict {
  const permissionPath = layers.decidedBy?.path ?? "no permission entry";
  // An enforcing tenant stops at the first deny. A shadow tenant records it and reads on, because the call
  // will run anyway and every redact rule that holds must still shape the output.
  const shadow = tenant.mode === "shadow";
  let denied: ShadowVerdict | null = null;
  if (layers.permission === "deny") {
    denied = {
      decision: "deny",
      reason_code: "permission_deny",
      reason: `denied by ${permissionPath}`,
      rule: null,
    };
    if (!shadow) return { ...denied, postTransform: layers.postTransform, redact: NO_PATHS };
  }
  let asked: CompiledRule | null = null;
  let postTransform = layers.postTransform;
  let redact = NO_PATHS;
  let activation: CelActivation | undefined;
  for (const rule of tenant.rules) {
    if (!applies(rule, tool.name, input)) continue;
    activation ??= activationOf(input, tenant.id, effective);
    const result = rule.condition(activation, input.now, input.argsBytes);
    const overBudget = typeof result !== "boolean" && result.overBudget === true;
    trace?.push({
      step: `rule ${rule.id}`,
      outcome: typeof result === "boolean" ? String(result) : overBudget ? "over budget" : "error",
    });
    // A rule that fails or runs over its budget denies, whatever its effect: no answer is not an allow.
    if (typeof result !== "boolean" || (result && rule.effect === "deny")) {
      denied ??=
        typeof result === "boolean"
          ? { decision: "deny", reason_code: "rule_deny", reason: rule.reason, rule: rule.id }
          : {
              decision: "deny",
              reason_code: overBudget ? "rule_over_budget" : "error",
              reason: `rule ${rule.id} ${overBudget ? "is over its budget" : "failed to evaluate"}: ${result.error}`,
              rule: rule.id,
            };
      if (!shadow) return { ...denied, postTransform, redact };
      continue;
    }
    if (!result) continue;
    if (rule.effect === "ask") asked ??= rule;
    if (rule.effect === "redact") {
      if (postTransform === "audit") postTransform = "redact";
      redact = redact.length === 0 ? rule.redact : [...redact, ...rule.redact];
    }
  }
  if (denied !== null) return { ...denied, postTransform, redact };
  if (asked !== null)
    return verdictOf("ask", "approval_required", asked.reason, asked.id, postTransform, redact);
  if (layers.permission === "ask") {
    return verdictOf(
      "ask",
      "approval_required",
      `approval required by ${permissionPath}`,
      null,
      postTransform,
      redact,
    );
  }
  return verdictOf("allow", "ok", `allowed by ${permissionPath}`, null, postTransform, redact);
}

/** The permission layers' verdict alone. */
function permissionVerdict(layers: LayerResolution): PolicyVerdict {
  const at = layers.decidedBy?.path ?? "no permission entry";
  if (layers.permission === "deny")
    return verdictOf("deny", "permission_deny", `denied by ${at}`, null, layers.postTransform);
  if (layers.permission === "ask")
    return verdictOf("ask", "approval_required", `approval required by ${at}`, null, layers.postTransform);
  return verdictOf("allow", "ok", `allowed by ${at}`, null, layers.postTransform);
}

function verdictOf(
  decision: Verdict,
  reason_code: ReasonCode,
  reason: string,
  rule: string | null,
  postTransform: PostTransform,
  redact: readonly string[] = NO_PATHS,
): PolicyVerdict {
  return { decision, reason_code, reason, rule, postTransform, redact };
}

function applies(rule: CompiledRule, tool: string, input: DecisionInput): boolean {
  return (
    (rule.tools === null || rule.tools.has(tool)) &&
    (rule.tiers === null || rule.tiers.has(input.tier)) &&
    (rule.users === null || rule.users.has(input.principal.user)) &&
    // Any agent of the chain: delegating further must not step out of a rule aimed at an agent.
    (rule.agents === null || input.chain.some((a) => rule.agents?.has(a) === true))
  );
}

function activationOf(input: DecisionInput, tenant: string, effective: readonly string[]): CelActivation {
  const p = input.principal;
  return {
    // the human, as their own issuer verified them, also when an agent acts for them with a delegation token
    user: {
      id: p.user,
      sub: p.originSub ?? p.sub,
      issuer: p.origin ?? p.issuer,
      email: p.email,
      tenant: p.tenant,
      scopes: effective,
      roles: p.roles,
      claims: p.originClaims ?? p.claims,
    },
    agent: input.agent,
    tier: input.tier,
    chain: input.chain,
    tool: input.tool,
    args: input.args ?? {},
    tenant,
  };
}

/**
 * A principal's scopes capped by its tenant's directory (what a delegation may start from).
 *
 * @example
 * directoryCap(policy, principal, new Set(principal.scopes));
 */
export function directoryCap(
  policy: CompiledPolicy,
  principal: Principal,
  scopes: ReadonlySet<string>,
): string[] {
  const tenant = principal.tenant === null ? undefined : policy.tenants.get(principal.tenant);
  return narrowScopes(scopes, tenant?.directory.get(principal.user)?.scopes);
}

function finalDecision(
  base: Pick<Decision, "tenant" | "mode" | "fail_mode">,
  decision: Verdict,
  reason_code: ReasonCode,
  reason: string,
  rule: string | null,
  layer: string | null,
  effective_scopes: readonly string[],
): Decision {
  return {
    decision,
    reason_code,
    reason,
    rule,
    layer,
    ...base,
    effective_scopes,
    post_transform: "audit",
    redact: NO_PATHS,
    buckets: NO_BUCKETS,
    shadow: null,
  };
}
