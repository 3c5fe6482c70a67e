/**
 * The configuration schema (`onbehalf.yaml`), as zod schemas that are also the TypeScript types.
 *
 * Every object is strict: an unknown field is an error (with a "did you mean" in the loader), because a
 * misspelt policy key that is silently ignored is a policy that silently allows.
 */
import { z } from "zod";
import { hasUnsafeText, unsafeTextMessage } from "../text.js";

/** The four tiers a call can run in. */
export const TIERS = ["interactive", "subagent", "background", "api"] as const;
export type Tier = (typeof TIERS)[number];
export const Tier = z.enum(TIERS);

/** JWS algorithms onbehalf can verify. `none` is not among them and never will be. */
export const ALGORITHMS = [
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "ES512",
  "EdDSA",
  "HS256",
  "HS384",
  "HS512",
] as const;
export type Algorithm = (typeof ALGORITHMS)[number];
export const DEFAULT_ALGORITHMS: Algorithm[] = ["RS256", "ES256", "EdDSA", "PS256"];

export const PRESETS = ["auth0", "okta", "entra", "cognito", "keycloak", "google", "generic"] as const;
export type Preset = (typeof PRESETS)[number];

const nonEmpty = z.string().min(1);

/**
 * Text that names something (a tenant, a user, an agent, a tool, a trace): at most `max` characters, and no
 * control characters or unpaired surrogates, which no audit store, header or terminal can carry safely.
 */
export function safeText(max = 200) {
  return z
    .string()
    .min(1)
    .max(max)
    .refine((s) => !hasUnsafeText(s), { message: unsafeTextMessage("this value") });
}
/** An identifier in the config: a tenant id, a user id, a rule id. */
const Identifier = safeText(500);
const ClaimPath = nonEmpty;
const ClaimPaths = z.union([ClaimPath, z.array(ClaimPath).min(1)]);

/** Where each principal field comes from in the token; a preset fills what is left out. */
export const ClaimsMapping = z.strictObject({
  subject: ClaimPath.optional(),
  tenant: z.union([ClaimPath, z.strictObject({ value: nonEmpty })]).optional(),
  scopes: ClaimPaths.optional(),
  email: ClaimPath.optional(),
  roles: ClaimPaths.optional(),
});
export type ClaimsMapping = z.output<typeof ClaimsMapping>;

export const IssuerConfig = z.strictObject({
  issuer: nonEmpty,
  audience: z.union([nonEmpty, z.array(nonEmpty).min(1)]),
  preset: z.enum(PRESETS).default("generic"),
  jwks_uri: z.string().url().nullable().default(null),
  /** Keys given inline instead of fetched (air-gapped setups, the development issuer); excludes jwks_uri. */
  jwks: z.strictObject({ keys: z.array(z.record(z.string(), z.unknown())).min(1) }).optional(),
  algorithms: z.array(z.enum(ALGORITHMS)).min(1).default(DEFAULT_ALGORITHMS),
  require_typ: nonEmpty.nullable().default(null),
  claims: ClaimsMapping.default({}),
  /** Prefix for `user` ids from this issuer; defaults to `<issuer>#` when several issuers are trusted. */
  user_prefix: z.string().optional(),
  clock_tolerance_seconds: z.number().min(0).max(300).default(30),
  max_token_bytes: z.number().int().min(512).max(65536).default(16384),
  jwks_cache_seconds: z.number().min(0).default(600),
  /** At least 1: without a cooldown, every token with a made-up kid would make onbehalf fetch the JWKS. */
  jwks_cooldown_seconds: z.number().min(1).default(30),
  /** Shared secret for HS* algorithms; only used when `algorithms` lists an HS* algorithm. */
  secret: nonEmpty.optional(),
  /** Allow an `http://` issuer or JWKS URL that is not on loopback. Only for test networks. */
  allow_insecure_http: z.boolean().default(false),
});
export type IssuerConfig = z.output<typeof IssuerConfig>;

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
  policy: PolicyConfig.default(PolicyConfig.parse({})),
});
export type TenantConfig = z.output<typeof TenantConfig>;

export const UpstreamConfig = z.strictObject({
  name: nonEmpty.regex(/^[A-Za-z0-9_-]+$/, "upstream names use letters, digits, _ and -"),
  transport: z.enum(["streamable-http", "stdio"]),
  url: z.string().url().optional(),
  command: nonEmpty.optional(),
  args: z.array(z.string()).default([]),
  prefix: z.string().optional(),
  /** Between prefix and tool name. OpenAI function names allow no dots: use "_" or "__" for those clients. */
  separator: z.enum([".", "_", "__", "-"]).default("."),
  timeout_ms: z.number().int().positive().default(30_000),
  /**
   * Which of the upstream's tools the gateway offers: `declared` (default) only those a `tools` entry names
   * (by their exposed name), so a tool the upstream adds tomorrow is neither listed nor callable until someone
   * declares it; `all` every tool it lists, the undeclared ones with `default_scopes` required.
   */
  expose: z.enum(["declared", "all"]).default("declared"),
  /** With `expose: all`: the scopes an undeclared tool of this upstream requires. */
  default_scopes: z.array(nonEmpty).default([]),
  auth: z
    .union([
      z.strictObject({ type: z.literal("none") }),
      z.strictObject({ type: z.literal("obo"), audience: nonEmpty }),
      z.strictObject({ type: z.literal("static"), header: nonEmpty, value: nonEmpty }),
    ])
    .default({ type: "none" }),
});
export type UpstreamConfig = z.output<typeof UpstreamConfig>;

export const ServerConfig = z.strictObject({
  host: nonEmpty.default("127.0.0.1"),
  port: z.number().int().min(0).max(65535).default(8787),
  public_url: z.string().url().optional(),
  admin_tokens: z.array(z.string()).default([]),
  signing_key: nonEmpty.default("./keys/onbehalf.jwk"),
  max_body_bytes: z.number().int().positive().default(1_048_576),
  /** The resource identifier MCP clients' tokens must be issued for (RFC 8707). Default `<public_url>/mcp`. */
  mcp_resource: z.string().url().optional(),
  /**
   * How long an MCP tool call the policy answers with `ask` is held open for an approver (below the MCP SDK
   * client's 60 s request timeout). Still undecided: the call returns an error naming the approval, and the
   * same call made again waits on the same approval.
   */
  mcp_approval_wait_seconds: z.number().min(0).max(600).default(50),
  /** How long `serve` waits for the audit store and Redis to answer at start before it gives up. */
  startup_wait_seconds: z.number().min(0).max(3600).default(30),
});
export type ServerConfig = z.output<typeof ServerConfig>;

export const AuditConfig = z.strictObject({
  store: nonEmpty.default("sqlite:./onbehalf.db"),
  durability: z.enum(["batch", "sync"]).default("batch"),
  /** This writer's log id (the checkpoint origin). Default: `onbehalf@<hostname>`. */
  log_id: nonEmpty.regex(/^[^\s+]+$/, "a log id has no spaces and no +").optional(),
  batch_size: z.number().int().positive().default(512),
  flush_ms: z.number().int().min(0).default(5),
  /** Ed25519 key that signs checkpoints; created on first start. */
  signing_key: nonEmpty.default("./keys/audit.jwk"),
  /** Sign a checkpoint every this many records… */
  checkpoint_every: z.number().int().positive().default(1000),
  /** …and every this many seconds when records were added (0: only by count and on shutdown). */
  checkpoint_seconds: z.number().min(0).default(60),
  /**
   * Sign records found after the log's last checkpoint although its last writer stopped cleanly (which signs
   * everything): only after checking them with `audit verify`. Default false: the writer refuses to start.
   */
  resume_unsigned_tail: z.boolean().default(false),
  /**
   * The writer's journal directory, on this host's own disk (not the database's): records whether each log's
   * last writer here stopped cleanly. Default: `<signing_key>.logs`.
   */
  journal: nonEmpty.optional(),
});
export type AuditConfig = z.output<typeof AuditConfig>;

export const LimitsConfig = z.strictObject({
  store: nonEmpty.default("memory"),
  /** Serialized arguments larger than this are denied before policy runs. */
  max_args_bytes: z.number().int().positive().default(65_536),
  /**
   * What one evaluation of a rule with a comprehension (`exists`, `all`, `map`, `filter`, `exists_one`) may
   * read of `args`, `user` and `chain`: each field or element read counts one. Past it the rule denies
   * (`rule_over_budget`), whatever its effect. Bounds the time one call can hold the event loop.
   */
  max_rule_reads: z.number().int().positive().default(10_000),
  /** A rule that reads `args` denies (`rule_over_budget`) when the serialized arguments are larger. */
  max_rule_args_bytes: z.number().int().positive().default(32_768),
});
export type LimitsConfig = z.output<typeof LimitsConfig>;

export const Config = z.strictObject({
  server: ServerConfig.default(ServerConfig.parse({})),
  dev_issuer: z.boolean().default(false),
  issuers: z.array(IssuerConfig).default([]),
  tools: z.array(ToolConfig).default([]),
  tenants: z.array(TenantConfig).default([]),
  upstreams: z.array(UpstreamConfig).default([]),
  audit: AuditConfig.default(AuditConfig.parse({})),
  limits: LimitsConfig.default(LimitsConfig.parse({})),
});
/** A validated configuration, defaults filled in. */
export type Config = z.output<typeof Config>;
/** What a user may write: every field with a default is optional. */
export type ConfigInput = z.input<typeof Config>;
