/**
 * The configuration schema (`onbehalf.yaml`) as a whole, as zod schemas that are also the TypeScript types. Each
 * part lives beside its concern: issuer.ts, policy.ts, server.ts, audit.ts, limits.ts.
 */
import { z } from "zod";
import { AuditConfig } from "./audit.js";
import { IssuerConfig } from "./issuer.js";
import { LimitsConfig } from "./limits.js";
import { TenantConfig, ToolConfig } from "./policy.js";
import { PromptConfig, ResourceConfig } from "./resources.js";
import { ServerConfig, UpstreamConfig } from "./server.js";

export const Config = z.strictObject({
  server: ServerConfig.default(ServerConfig.parse({})),
  dev_issuer: z.boolean().default(false),
  issuers: z.array(IssuerConfig).default([]),
  tools: z.array(ToolConfig).default([]),
  /** The MCP gateway's resources, decided as `resource:<uri>` (config/resources.ts). */
  resources: z.array(ResourceConfig).default([]),
  /** The MCP gateway's prompts, decided as `prompt:<name>` (config/resources.ts). */
  prompts: z.array(PromptConfig).default([]),
  /**
   * Tool names the policy uses must be declared under `tools` (a misspelt one would make a deny apply to
   * nothing). `true` allows names declared only in code (`gov.governed`, the adapters): they are then warnings.
   */
  allow_undeclared_tools: z.boolean().default(false),
  tenants: z.array(TenantConfig).default([]),
  upstreams: z.array(UpstreamConfig).default([]),
  audit: AuditConfig.default(AuditConfig.parse({})),
  limits: LimitsConfig.default(LimitsConfig.parse({})),
});
/** A validated configuration, defaults filled in. */
export type Config = z.output<typeof Config>;
/** What a user may write: every field with a default is optional. */
export type ConfigInput = z.input<typeof Config>;
