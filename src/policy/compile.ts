/**
 * Compile a validated config into the structures the decision path reads: Maps instead of objects (no
 * prototype keys, O(1) lookups), CEL conditions planned, redaction paths parsed. Compiling is the only
 * place that can fail; a compiled policy decides without throwing.
 */

import type {
  DirectoryUser,
  LayerEntry,
  PolicyConfig,
  RuleEffect,
  SENSITIVITIES,
  TenantConfig,
  Tier,
  TierMap,
  ToolConfig,
} from "../config/policy.js";
import { TIERS } from "../config/policy.js";
import { promptPolicyName, resourcePolicyName } from "../config/resources.js";
import type { Config } from "../config/schema.js";
import { DEV_ISSUER } from "../identity/dev-issuer.js";
import {
  type CompileResult,
  type Condition,
  compileCondition,
  DEFAULT_RULE_LIMITS,
  type RuleLimits,
} from "./cel.js";
import type { LayerHit, LayerName, LayerTables, TierTable } from "./layers.js";
import { compilePath, type RedactPath } from "./redact.js";

export interface CompiledTool {
  readonly name: string;
  readonly description: string | undefined;
  readonly requiredScopes: readonly string[];
  readonly sensitivity: (typeof SENSITIVITIES)[number];
  readonly redact: readonly string[];
  readonly redactPaths: readonly RedactPath[];
  /** What happens to output the redaction paths cannot reach (see policy/output.ts). */
  readonly unparsedOutput: ToolConfig["unparsed_output"];
  readonly inputSchema: Readonly<Record<string, unknown>> | undefined;
}

export interface CompiledRule {
  readonly id: string;
  readonly tools: ReadonlySet<string> | null;
  readonly tiers: ReadonlySet<string> | null;
  readonly users: ReadonlySet<string> | null;
  readonly agents: ReadonlySet<string> | null;
  readonly when: string;
  readonly condition: Condition;
  readonly effect: RuleEffect;
  readonly reason: string;
  readonly redact: readonly string[];
  readonly redactPaths: readonly RedactPath[];
}

export interface CompiledTenant extends LayerTables {
  /** The issuers that may vouch for this tenant's users; null when no issuer is configured (principals made in code). */
  readonly issuers: ReadonlySet<string> | null;
  readonly requireMembership: boolean;
  readonly directory: ReadonlyMap<string, DirectoryUser>;
  readonly mode: PolicyConfig["mode"];
  readonly failMode: PolicyConfig["fail_mode"];
  readonly rules: readonly CompiledRule[];
}

export interface CompiledPolicy {
  readonly tools: ReadonlyMap<string, CompiledTool>;
  readonly tenants: ReadonlyMap<string, CompiledTenant>;
  readonly maxArgsBytes: number;
}

/** A problem found while compiling, with the config path it belongs to. */
export interface CompileIssue {
  readonly path: readonly (string | number)[];
  readonly message: string;
}

/**
 * Compile a validated config. Returns the issues instead of a policy when any part does not compile.
 *
 * @example
 * const r = compilePolicy(config);
 * if (!r.ok) throw new Error(r.issues.map((i) => i.message).join("\n"));
 */
export function compilePolicy(
  config: Pick<Config, "tools" | "tenants" | "limits" | "issuers" | "dev_issuer"> &
    Partial<Pick<Config, "resources" | "prompts">>,
): { ok: true; policy: CompiledPolicy } | { ok: false; issues: CompileIssue[] } {
  const issues: CompileIssue[] = [];
  const tools = new Map<string, CompiledTool>();
  config.tools.forEach((tool, i) => {
    if (tools.has(tool.name))
      issues.push({ path: ["tools", i, "name"], message: `duplicate tool "${tool.name}"` });
    tools.set(tool.name, compileTool(tool, ["tools", i], issues));
  });
  // Resources and prompts are decided as tools under their policy names (config/resources.ts).
  for (const [i, item] of pseudoTools(config)) {
    const at = [item.name.startsWith("resource:") ? "resources" : "prompts", i];
    if (tools.has(item.name))
      issues.push({
        path: [...at, item.name.startsWith("resource:") ? "uri" : "name"],
        message: `duplicate "${item.name}"`,
      });
    tools.set(item.name, compileTool(item, at, issues));
  }
  const tenants = new Map<string, CompiledTenant>();
  const limits: RuleLimits = {
    maxReads: config.limits.max_rule_reads,
    maxArgsBytes: config.limits.max_rule_args_bytes,
  };
  const vouching = issuerBindings(config);
  config.tenants.forEach((tenant, i) => {
    if (tenants.has(tenant.id))
      issues.push({ path: ["tenants", i, "id"], message: `duplicate tenant "${tenant.id}"` });
    const compiled = compileTenant(tenant, ["tenants", i], issues, limits);
    tenants.set(tenant.id, { ...compiled, issuers: vouching(tenant, ["tenants", i], issues) });
  });
  if (issues.length > 0) return { ok: false, issues };
  return {
    ok: true,
    policy: { tools, tenants, maxArgsBytes: config.limits.max_args_bytes },
  };
}

/**
 * Which issuers may vouch for a tenant's users. A tenant names them (`issuers`); else the issuers that pin
 * their tokens' tenant to it (`claims.tenant: { value: <tenant> }`); else, when one issuer is trusted, that one.
 * With several trusted issuers and none of these, it is a configuration error: any of them could assert the
 * tenant (a claim its own administrators control) and act in it.
 */
function issuerBindings(config: Pick<Config, "issuers" | "dev_issuer">) {
  const trusted = config.issuers.map((i) => i.issuer);
  if (config.dev_issuer) trusted.push(DEV_ISSUER);
  return (
    tenant: TenantConfig,
    path: readonly (string | number)[],
    issues: CompileIssue[],
  ): ReadonlySet<string> | null => {
    if (tenant.issuers !== undefined) {
      tenant.issuers.forEach((issuer, k) => {
        if (!trusted.includes(issuer)) {
          issues.push({
            path: [...path, "issuers", k],
            message: `issuer "${issuer}" is not trusted: list it under issuers: (trusted: ${trusted.join(", ") || "none"})`,
          });
        }
      });
      return new Set(tenant.issuers);
    }
    const pinned = config.issuers
      .filter((i) => typeof i.claims.tenant === "object" && i.claims.tenant.value === tenant.id)
      .map((i) => i.issuer);
    if (pinned.length > 0) return new Set(pinned);
    if (trusted.length === 0) return null;
    if (trusted.length === 1) return new Set(trusted);
    issues.push({
      path: [...path, "issuers"],
      message:
        `tenant "${tenant.id}" names no issuers, and ${trusted.length} are trusted (${trusted.join(", ")}): ` +
        `a token from any of them whose tenant claim says "${tenant.id}" (a claim that issuer's administrators ` +
        "control) would act in this tenant. List the issuers that may vouch for its users: " +
        `issuers: [${trusted[0]}]`,
    });
    return null;
  };
}

/** The `resources:` and `prompts:` entries as the tools they are decided as, with their index. */
function pseudoTools(config: Partial<Pick<Config, "resources" | "prompts">>): [number, ToolConfig][] {
  const out: [number, ToolConfig][] = [];
  const common = (e: {
    description?: string | undefined;
    required_scopes: string[];
    sensitivity: ToolConfig["sensitivity"];
    redact: string[];
    unparsed_output: ToolConfig["unparsed_output"];
  }) => ({
    ...(e.description === undefined ? {} : { description: e.description }),
    required_scopes: e.required_scopes,
    sensitivity: e.sensitivity,
    redact: e.redact,
    unparsed_output: e.unparsed_output,
  });
  (config.resources ?? []).forEach((r, i) => {
    out.push([i, { name: resourcePolicyName(r.uri), ...common(r) }]);
  });
  (config.prompts ?? []).forEach((p, i) => {
    out.push([i, { name: promptPolicyName(p.name), ...common(p) }]);
  });
  return out;
}

/** Compile one tool definition (config entry or `governed()` definition). */
export function compileTool(
  tool: ToolConfig,
  at: readonly (string | number)[],
  issues: CompileIssue[],
): CompiledTool {
  return {
    name: tool.name,
    description: tool.description,
    requiredScopes: [...new Set(tool.required_scopes)],
    sensitivity: tool.sensitivity,
    redact: tool.redact,
    redactPaths: compilePaths(tool.redact, [...at, "redact"], issues),
    unparsedOutput: tool.unparsed_output,
    inputSchema: tool.input_schema,
  };
}

/**
 * Compile one tenant: its directory, permission layers and rules. `limits` bound what one evaluation of a
 * rule may cost (`limits.max_rule_reads`, `limits.max_rule_args_bytes`).
 *
 * @example
 * const issues: CompileIssue[] = [];
 * const tenant = compileTenant(config.tenants[0], ["tenants", 0], issues, { maxReads: 10_000, maxArgsBytes: 32_768 });
 */
export function compileTenant(
  tenant: TenantConfig,
  at: readonly (string | number)[],
  issues: CompileIssue[],
  limits: RuleLimits = DEFAULT_RULE_LIMITS,
): CompiledTenant {
  const directory = new Map<string, DirectoryUser>();
  tenant.users.forEach((user, i) => {
    if (directory.has(user.uid)) {
      issues.push({ path: [...at, "users", i, "uid"], message: `user "${user.uid}" is listed twice` });
    }
    directory.set(user.uid, user);
  });
  const policy = tenant.policy;
  const ruleIds = new Set<string>();
  const rules = policy.rules.map((rule, i): CompiledRule => {
    const ruleAt = [...at, "policy", "rules", i];
    if (ruleIds.has(rule.id))
      issues.push({ path: [...ruleAt, "id"], message: `duplicate rule id "${rule.id}"` });
    ruleIds.add(rule.id);
    const compiled: CompileResult = compileCondition(rule.when, limits);
    if (!compiled.ok) issues.push({ path: [...ruleAt, "when"], message: compiled.error });
    const redact = rule.redact ?? [];
    return {
      id: rule.id,
      tools: setOrNull(rule.tools),
      tiers: setOrNull(rule.tiers),
      users: setOrNull(rule.users),
      agents: setOrNull(rule.agents),
      when: rule.when,
      condition: compiled.ok ? compiled.condition : () => ({ error: "the condition did not compile" }),
      effect: rule.effect,
      reason: rule.reason ?? `rule ${rule.id}`,
      redact,
      redactPaths: compilePaths(redact, [...ruleAt, "redact"], issues),
    };
  });
  return {
    id: tenant.id,
    issuers: null, // set by compilePolicy, which knows the trusted issuers
    requireMembership: tenant.require_membership,
    directory,
    mode: policy.mode,
    failMode: policy.fail_mode,
    defaults: tierTable(policy.defaults, "defaults"),
    tools: mapOf(policy.tools, (cell, tool) => tierTable(cell, "tools", tool)),
    users: mapOf(policy.users, (cell, user) => tierTable(cell, "users", user)),
    userTools: mapOf(policy.user_tools, (tools, user) =>
      mapOf(tools, (cell, tool) => tierTable(cell, "user_tools", user, tool)),
    ),
    rules,
  };
}

/**
 * One cell's entries, resolved per tier at load: each field of a tier's entry wins over the same field of
 * `"*"`, and a field the tier leaves out comes from `"*"` (a tier entry that only sets a rate limit keeps the
 * `"*"` permission). Each hit remembers which entry each field came from.
 */
function tierTable(map: TierMap, layer: LayerName, ...keys: string[]): TierTable {
  const pathOf = (tier: string) => [layer, ...keys, tier].map(displayKey).join(".");
  const star = map["*"];
  const table = new Map<Tier, LayerHit>();
  for (const tier of TIERS) {
    const own = map[tier];
    if (own === undefined && star === undefined) continue;
    const pick = <K extends keyof LayerEntry>(field: K): [LayerEntry[K], string] | undefined => {
      if (own?.[field] !== undefined) return [own[field], pathOf(tier)];
      if (star?.[field] !== undefined) return [star[field], pathOf("*")];
      return undefined;
    };
    const permission = pick("permission");
    const limit = pick("rate_limit_per_minute");
    const transform = pick("post_transform");
    const entry: LayerEntry = {
      ...(permission === undefined ? {} : { permission: permission[0] }),
      ...(limit === undefined ? {} : { rate_limit_per_minute: limit[0] }),
      ...(transform === undefined ? {} : { post_transform: transform[0] }),
    };
    const cell = own !== undefined ? pathOf(tier) : pathOf("*");
    table.set(tier, {
      layer,
      path: permission?.[1] ?? cell,
      entry,
      limitPath: limit?.[1] ?? cell,
    });
  }
  return table;
}

function mapOf<V, W>(record: Record<string, V>, f: (v: V, key: string) => W): ReadonlyMap<string, W> {
  return new Map(Object.entries(record).map(([k, v]) => [k, f(v, k)]));
}

/** A config key as written in a path: quoted when it is not a plain identifier. */
function displayKey(key: string): string {
  return /^[A-Za-z0-9_*-]+$/.test(key) ? key : JSON.stringify(key);
}

function setOrNull(values: readonly string[] | undefined): ReadonlySet<string> | null {
  return values === undefined ? null : new Set(values);
}

function compilePaths(
  paths: readonly string[],
  at: readonly (string | number)[],
  issues: CompileIssue[],
): RedactPath[] {
  const out: RedactPath[] = [];
  paths.forEach((p, i) => {
    const compiled = compilePath(p);
    if ("error" in compiled) issues.push({ path: [...at, i], message: compiled.error });
    else out.push(compiled);
  });
  return out;
}
