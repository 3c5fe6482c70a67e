/**
 * The policy's configuration: tiers, tools, permission layers, rules, and tenants with their directory.
 *
 * Every object is strict: an unknown field is an error (with a "did you mean" in the loader), because a
 * misspelt policy key that is silently ignored is a policy that silently allows.
 */
import { z } from "zod";
import { AgentClientConfig } from "./clients.js";
import { Identifier, nonEmpty, Tier } from "./fields.js";

export { TIERS, Tier } from "./fields.js";

export const SENSITIVITIES = ["public", "user_data", "user_action", "admin"] as const;
export const ToolConfig = z.strictObject({
  name: nonEmpty.regex(/^[A-Za-z0-9_.:/-]+$/, "tool names use letters, digits and _ . : / -"),
  description: z.string().optional(),
  required_scopes: z.array(nonEmpty).default([]),
  sensitivity: z.enum(SENSITIVITIES).default("user_data"),
  /** Paths redacted from the output when post_transform is redact, and from the audited arguments always. */
  redact: z.array(nonEmpty).default([]),
  /**
   * When output is redacted: what happens to output the paths cannot reach (text that is not JSON, an image, a
   * binary resource). `withhold` (default) replaces it with a notice the model reads; `pass` lets it through.
   */
  unparsed_output: z.enum(["withhold", "pass"]).default("withhold"),
  /** JSON Schema of the arguments, used by the narrow-tool lint and passed through by the MCP gateway. */
  input_schema: z.record(z.string(), z.unknown()).optional(),
});
export type ToolConfig = z.output<typeof ToolConfig>;

export const PERMISSIONS = ["allow", "deny", "ask"] as const;
export type Permission = (typeof PERMISSIONS)[number];
export const POST_TRANSFORMS = ["audit", "redact", "block"] as const;
export type PostTransform = (typeof POST_TRANSFORMS)[number];

/** One cell of a permission layer: what happens in one tier. */
export const LayerEntry = z.strictObject({
  permission: z.enum(PERMISSIONS).optional(),
  rate_limit_per_minute: z.number().int().positive().optional(),
  post_transform: z.enum(POST_TRANSFORMS).optional(),
});
export type LayerEntry = z.output<typeof LayerEntry>;

/** Entries per tier; `"*"` matches any tier a more specific key does not name. */
export const TierMap = z.partialRecord(z.union([Tier, z.literal("*")]), LayerEntry);
export type TierMap = z.output<typeof TierMap>;

export const RULE_EFFECTS = ["deny", "ask", "redact"] as const;
export type RuleEffect = (typeof RULE_EFFECTS)[number];
export const Rule = z.strictObject({
  id: Identifier,
  /** Tools the rule applies to; omitted = every tool. */
  tools: z.array(nonEmpty).min(1).optional(),
  tiers: z.array(Tier).min(1).optional(),
  users: z.array(Identifier).min(1).optional(),
  agents: z.array(Identifier).min(1).optional(),
  /** CEL over `user, agent, tier, chain, tool, args, now`; omitted = always. */
  when: nonEmpty.default("true"),
  effect: z.enum(RULE_EFFECTS),
  reason: z.string().optional(),
  /** For `effect: redact`: paths to redact in addition to the tool's own. */
  redact: z.array(nonEmpty).optional(),
});
export type Rule = z.output<typeof Rule>;

export const PolicyConfig = z.strictObject({
  mode: z.enum(["enforce", "shadow"]).default("enforce"),
  fail_mode: z.enum(["fail_closed", "fail_open"]).default("fail_closed"),
  defaults: TierMap.default({}),
  tools: z.record(nonEmpty, TierMap).default({}),
  users: z.record(Identifier, TierMap).default({}),
  user_tools: z.record(Identifier, z.record(nonEmpty, TierMap)).default({}),
  rules: z.array(Rule).default([]),
});
export type PolicyConfig = z.output<typeof PolicyConfig>;

export const DirectoryUser = z.strictObject({
  uid: Identifier,
  email: z.string().optional(),
  role: z.string().optional(),
  /** When present, caps (intersects) the token's scopes for this user. */
  scopes: z.array(nonEmpty).optional(),
  /** A disabled user is not a member: every call is denied with `not_a_member`. */
  disabled: z.boolean().default(false),
});
export type DirectoryUser = z.output<typeof DirectoryUser>;

export const TenantConfig = z.strictObject({
  id: Identifier,
  /**
   * The issuers that may vouch for this tenant's users (their `issuer` values; the development issuer is
   * `urn:onbehalf:dev-issuer`). Required when several issuers are trusted; with one, it defaults to that one.
   */
  issuers: z.array(nonEmpty).min(1).optional(),
  require_membership: z.boolean().default(false),
  users: z.array(DirectoryUser).default([]),
  /** Agent runtimes registered as OAuth clients of `/v1/token` (config/clients.ts). */
  clients: z.array(AgentClientConfig).default([]),
  /** Delegations in this tenant come from registered clients that authenticated, and from nobody else. */
  require_client_auth: z.boolean().default(false),
  policy: PolicyConfig.default(PolicyConfig.parse({})),
});
export type TenantConfig = z.output<typeof TenantConfig>;
