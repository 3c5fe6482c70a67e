/**
 * Trace ids: every run has one, so the calls of one agent run can be found together in the audit. In W3C
 * trace-context form (32 lowercase hex digits, not all zero): taken from an incoming `traceparent` header or
 * the active OpenTelemetry span when there is one, else generated. Delegations keep their parent's.
 */
import { randomUUID } from "node:crypto";
import { isSpanContextValid, trace } from "@opentelemetry/api";

const ZERO_TRACE = "0".repeat(32);
/** `version-traceid-parentid-flags`, W3C Trace Context §3.2 (a future version may append fields). */
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/**
 * The trace id of a new run: the active OpenTelemetry span's, else a random one.
 *
 * @example
 * newTraceId(); // "4bf92f3577b34da6a3ce929d0e0e4736"
 */
export function newTraceId(): string {
  const span = trace.getActiveSpan()?.spanContext();
  if (span !== undefined && isSpanContextValid(span)) return span.traceId;
  return randomUUID().replaceAll("-", "");
}

/**
 * The trace id of a `traceparent` header, or undefined when there is none or it is not valid (an invalid
 * header is ignored, as W3C Trace Context says: the run starts a trace of its own).
 *
 * @example
 * traceIdOf("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"); // "4bf92f3577b34da6a3ce929d0e0e4736"
 */
export function traceIdOf(traceparent: string | readonly string[] | undefined): string | undefined {
  if (typeof traceparent !== "string") return undefined;
  const m = TRACEPARENT.exec(traceparent.trim());
  if (m === null) return undefined;
  const [, version, traceId, parentId, , rest] = m;
  if (version === "ff" || (version === "00" && rest !== undefined)) return undefined;
  if (traceId === ZERO_TRACE || parentId === "0000000000000000") return undefined;
  return traceId;
}
