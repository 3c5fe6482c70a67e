/**
 * What the MCP gateway audits about a user's session besides calls, reads and gets: an upstream's sampling and
 * elicitation requests (mcp-relay.ts), resource subscriptions (mcp-subscriptions.ts). Each is an `admin` record
 * that carries the user, tenant, agent chain and trace of the run it happened in, with `source: mcp`.
 */
import { newCallId } from "../audit/call-id.js";
import type { RunContext } from "../context/run.js";
import type { Governor } from "../govern/governor.js";

/** One event of a user's session. */
export interface SessionEvent {
  /** The policy name it concerns (a tool's exposed name, `resource:…`). */
  readonly tool: string;
  readonly args: Record<string, unknown>;
  /** Whether what happened was allowed and went through. */
  readonly ok: boolean;
  readonly reason: string;
  /** The reason code of a refusal (default `error`). */
  readonly refusedAs?: "error" | "permission_deny";
}

/**
 * Append `event` to the audit as something `run`'s user did or was asked.
 *
 * @example
 * recordSessionEvent(gov, run, { tool: "resource:crm", args: { uri }, ok: true, reason: "alice subscribed" });
 */
export function recordSessionEvent(gov: Governor, run: RunContext, event: SessionEvent): number {
  return gov.recordEvent({
    kind: "admin",
    source: "mcp",
    tenant: run.principal.tenant,
    user: run.principal.user,
    email: run.principal.email,
    agent: run.agent,
    tier: run.tier,
    chain: run.chain,
    tool: event.tool,
    args_digest: null,
    args: event.args,
    decision: event.ok ? "allow" : "deny",
    reason_code: event.ok ? "ok" : (event.refusedAs ?? "error"),
    reason: event.reason,
    rule: null,
    outcome: event.ok ? "ok" : "error",
    trace_id: run.traceId,
    call_id: newCallId(gov.now()),
  });
}
