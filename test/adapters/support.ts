/** Shared fixtures of the adapter tests: a governor, two humans, and the audit as the tests read it. */
import { setTimeout as sleep } from "node:timers/promises";
import type { AuditRecord } from "../../src/audit/record.js";
import type { Governor } from "../../src/govern/governor.js";
import { testGovernor } from "../support/governor.js";
import { principal } from "../support/principal.js";

/** Alice may read customers and mail and issue refunds; Bob may only read customers. */
export const alice = principal({ user: "alice", scopes: ["customers:read", "email.read", "refunds:write"] });
export const bob = principal({ user: "bob", scopes: ["customers:read"] });

export const customer = { id: "c-1", name: "Ada", ssn: "078-05-1120" };

/** A governor with the test tools (get_customer, read_email, issue_refund > 500 asks) and redaction on. */
export async function adapterGovernor(): Promise<Governor> {
  return (await testGovernor()).gov;
}

/** Every audit record of `user`, oldest first. */
export async function auditOf(gov: Governor, user: string): Promise<AuditRecord[]> {
  await gov.flush();
  const { records } = await gov.queryAudit({ user, limit: 1000 });
  return [...records].reverse();
}

/** The attempt records of `user` as `[tool, decision, reason_code, chain]`, oldest first. */
export async function attemptsOf(gov: Governor, user: string): Promise<[string, string, string, string[]][]> {
  return (await auditOf(gov, user))
    .filter((r) => r.kind === "attempt")
    .map((r) => [r.tool ?? "", r.decision, r.reason_code, [...r.chain]]);
}

/**
 * The attempts every framework's two-agent run records: `root` reads a customer, hands off to `mailer`, which reads
 * mail (`mail`: allow for alice, deny for bob, who lacks email.read) and over-reaches for a customer: denied.
 */
export function handOffAttempts(
  root: string,
  mail: "allow" | "deny" = "allow",
): [string, string, string, string[]][] {
  return [
    ["get_customer", "allow", "ok", [root]],
    ["read_email", mail, mail === "allow" ? "ok" : "missing_scope", [root, "mailer"]],
    ["get_customer", "deny", "missing_scope", [root, "mailer"]],
  ];
}

/** A small delay inside tools, so concurrent runs interleave. */
export const tick = (): Promise<void> => sleep(5);
