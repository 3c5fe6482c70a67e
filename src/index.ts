/**
 * onbehalf: per-user auth for AI agents. Verify the human, bind them to the agent's run, decide every tool
 * call against policy, audit every attempt.
 *
 * Every name exported here is public API. Heavy or Node-only parts (audit stores, the server) sit behind
 * subpath exports and are loaded only when a config asks for them.
 *
 * @example
 * import { createGovernor } from "onbehalf";
 * const gov = await createGovernor({ config: "onbehalf.yaml" });
 * const principal = await gov.verify(req.headers.authorization);
 * const getCustomer = gov.governed({ name: "get_customer", execute: async ({ id }) => db.customer(id) });
 * await gov.runAs(principal, { agent: "support-bot" }, () => getCustomer({ id: "c-1" }));
 */

export type { AuditLog, AuditLogOptions, CheckpointPolicy, ResumedTail } from "./audit/log.js";
export type { AuditFields, AuditRecord, Outcome, RecordKind, SealedRecord, Source } from "./audit/record.js";
export type {
  AuditPage,
  AuditQuery,
  AuditStore,
  ClaimOptions,
  ClaimResult,
  LogHead,
  LogHolder,
  StoredCheckpoint,
  StoredRow,
  WriterClaim,
} from "./audit/store.js";
export type { IssuerConfig } from "./config/issuer.js";
export type { ConfigIssue } from "./config/issues.js";
export { formatIssue } from "./config/issues.js";
export type {
  DirectoryUser,
  LayerEntry,
  Permission,
  PolicyConfig,
  PostTransform,
  Rule,
  RuleEffect,
  TenantConfig,
  Tier,
  TierMap,
  ToolConfig,
} from "./config/policy.js";
export { TIERS } from "./config/policy.js";
export type { Config, ConfigInput } from "./config/schema.js";
export type { DelegateOptions, Hop, RunContext, RunOptions } from "./context/run.js";
export { currentRun, delegate, runAs, tryCurrentRun } from "./context/run.js";
export type { Bucket, Decision, ReasonCode, ShadowVerdict, Verdict } from "./decision.js";
export { REASON_CODES } from "./decision.js";
export type { ErrorCode, OAuthError } from "./errors.js";
export { isOnbehalfError, OnbehalfError } from "./errors.js";
export type {
  Approval,
  ApprovalGrant,
  ApprovalRefusal,
  ApprovalRequest,
  ApprovalStatus,
  ApprovalStore,
  Approvals,
  ApprovalUpdate,
  Approver,
  StoredApproval,
} from "./govern/approvals.js";
export type { GovernorOptions } from "./govern/bootstrap.js";
export { createGovernor } from "./govern/bootstrap.js";
export type { LoadedConfig } from "./govern/config.js";
export { loadConfigFile, loadConfigObject } from "./govern/config.js";
export type {
  GovernedTool,
  GovernedToolDefinition,
  Governor,
  GovernorSettings,
  ToolCallContext,
} from "./govern/governor.js";
export type { BeginOptions, CallAttempt, CallResult, FinishedCall, ReportedCall } from "./govern/pipeline.js";
export type { ToolDeclaration } from "./govern/tools.js";
export type { DevTokenOptions } from "./identity/dev-issuer.js";
export { DEV_AUDIENCE, DEV_ISSUER, devIssuerConfig, mintDevToken } from "./identity/dev-issuer.js";
export type { PublicJwk, SigningAlgorithm, SigningKey } from "./identity/keys.js";
export { generateSigningKey, loadOrCreateSigningKey } from "./identity/keys.js";
export type { Principal } from "./identity/principal.js";
export type { Identity, IdentityOptions } from "./identity/verify.js";
export { createIdentity } from "./identity/verify.js";
export type { RateLimiter } from "./limits/window.js";
export type { CelActivation, Condition, ConditionError, RuleLimits } from "./policy/cel.js";
export type { CompiledPolicy, CompiledRule, CompiledTenant, CompiledTool } from "./policy/compile.js";
export type { LayerHit, LayerName, LayerTables, TierTable } from "./policy/layers.js";
export type { RedactPath, Segment } from "./policy/redact.js";
