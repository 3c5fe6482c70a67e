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

export type { AuditRecord, Outcome, RecordKind, Source } from "./audit/record.js";
export type { AuditPage, AuditQuery } from "./audit/store.js";
export type { IssuerConfig } from "./config/issuer.js";
export type { ConfigIssue } from "./config/issues.js";
export { formatIssue } from "./config/issues.js";
export type { Tier } from "./config/policy.js";
export { TIERS } from "./config/policy.js";
export type { Config, ConfigInput } from "./config/schema.js";
export type { DelegateOptions, Hop, RunContext, RunOptions } from "./context/run.js";
export { currentRun, delegate, runAs, tryCurrentRun } from "./context/run.js";
export type { Decision, ReasonCode, ShadowVerdict, Verdict } from "./decision.js";
export { REASON_CODES } from "./decision.js";
export type { ErrorCode, OAuthError } from "./errors.js";
export { isOnbehalfError, OnbehalfError } from "./errors.js";
export type { GovernorOptions } from "./govern/bootstrap.js";
export { createGovernor } from "./govern/bootstrap.js";
export { loadConfigFile, loadConfigObject } from "./govern/config.js";
export type { GovernedTool, GovernedToolDefinition, ToolCallContext } from "./govern/governor.js";
export { Governor } from "./govern/governor.js";
export type { CallAttempt, CallResult, FinishedCall } from "./govern/pipeline.js";
export type { DevTokenOptions } from "./identity/dev-issuer.js";
export { DEV_AUDIENCE, DEV_ISSUER, devIssuerConfig, mintDevToken } from "./identity/dev-issuer.js";
export type { PublicJwk, SigningAlgorithm, SigningKey } from "./identity/keys.js";
export { generateSigningKey, loadOrCreateSigningKey } from "./identity/keys.js";
export type { Principal } from "./identity/principal.js";
export type { Identity, IdentityOptions } from "./identity/verify.js";
export { createIdentity } from "./identity/verify.js";
