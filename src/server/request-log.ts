/**
 * One log line per request (Fastify's pino logger): the route template, method, status and latency, and for a
 * request that decided a governed call who asked for what and what was decided. Never a header (the
 * `Authorization` bearer, cookies), a query string, a body, tool arguments or outputs.
 */
import type { FastifyReply, FastifyRequest } from "fastify";
import type { AuditFields } from "../audit/record.js";
import type { Principal } from "../identity/principal.js";

/** What a request decided, for its log line. */
interface CallNote {
  readonly sub: string | null;
  readonly user: string | null;
  readonly tenant: string | null;
  readonly tool: string | null;
  readonly agent: string | null;
  readonly decision: string;
  readonly reason_code: string;
  readonly call_id: string;
  readonly trace_id: string | null;
}

const notes = new WeakMap<FastifyRequest, CallNote>();

/**
 * The tool as logged. A resource read no entry declares is decided as `resource:<the URI asked for>`: its query
 * and fragment, which may carry anything (a key, an id), stay out of the log (the audit has them).
 */
function loggedTool(tool: string | null): string | null {
  return tool?.startsWith("resource:") === true ? tool.replace(/[?#][\s\S]*$/, "") : tool;
}

/**
 * Note the governed call a request decided (its audit fields), so the request's log line names it.
 *
 * @example
 * noteCall(req, attempt.fields, caller.principal);
 */
export function noteCall(req: FastifyRequest, f: AuditFields, principal?: Principal): void {
  notes.set(req, {
    sub: principal?.sub ?? null,
    user: f.user,
    tenant: f.tenant,
    tool: loggedTool(f.tool),
    agent: f.agent,
    decision: f.decision,
    reason_code: f.reason_code,
    call_id: f.call_id,
    trace_id: f.trace_id,
  });
}

/** Write the request's line (at info; nothing when the level is above it). */
export function logRequest(req: FastifyRequest, reply: FastifyReply, route: string): void {
  req.log.info(
    {
      route,
      method: req.method,
      status: reply.statusCode,
      latency_ms: Math.round(reply.elapsedTime * 1000) / 1000,
      ...notes.get(req),
    },
    "request",
  );
}
