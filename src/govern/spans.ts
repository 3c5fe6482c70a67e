/**
 * OpenTelemetry spans of governed calls, through `@opentelemetry/api` alone: without an SDK installed by the
 * application every call here is the API's no-op (no span is recorded, nothing is exported). With one, each
 * decision is a span `onbehalf.decide` (named `onbehalf.decide <tool>` for a declared tool) in the run's trace:
 * a child of the active span when that span is in the run's trace (the application's own span in-process, the
 * control plane's request span), else under the run's trace id as a remote parent, so the span's trace id is the
 * audit record's `trace_id`. Attributes: tenant, tool, agent, decision, reason code, source. Never arguments,
 * never tokens.
 */
import {
  type Context,
  context,
  INVALID_SPAN_CONTEXT,
  ProxyTracerProvider,
  type Span,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  trace,
} from "@opentelemetry/api";
import type { AuditFields } from "../audit/record.js";

const NO_PARENT_SPAN = "0000000000000000";
/** The API's no-op provider: what the global provider delegates to until an SDK is installed. */
const NOOP_PROVIDER = new ProxyTracerProvider().getDelegate();
/** One span that records nothing, for every call while no SDK is installed. */
const NOT_RECORDING = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);

/**
 * Whether an OpenTelemetry SDK is installed. False while the global provider still delegates to the no-op one:
 * then a decision costs no span, no context and no allocation. Anything else (an SDK, another copy of the API)
 * counts as installed.
 */
export function tracingInstalled(): boolean {
  const provider = trace.getTracerProvider() as Partial<ProxyTracerProvider>;
  return provider.getDelegate?.() !== NOOP_PROVIDER;
}

/**
 * Start the span of a decision in the trace `traceId` (undefined: the active context's, if any).
 *
 * @example
 * const span = startDecisionSpan(run?.traceId);
 * endDecisionSpan(span, fields, true);
 */
export function startDecisionSpan(traceId: string | undefined): Span {
  if (!tracingInstalled()) return NOT_RECORDING;
  // The tracer of the provider in force now (one installed later, or again, included).
  return trace
    .getTracer("onbehalf")
    .startSpan("onbehalf.decide", { kind: SpanKind.INTERNAL }, parentIn(traceId));
}

/**
 * End a decision's span with what the audit record says of it. `declared`: the tool is one the policy declares,
 * so its name may go in the span's name (an undeclared name is whatever a caller sent: attribute only).
 */
export function endDecisionSpan(span: Span, f: AuditFields, declared: boolean): void {
  if (span.isRecording()) {
    if (declared && f.tool !== null) span.updateName(`onbehalf.decide ${f.tool}`);
    span.setAttributes({
      "onbehalf.decision": f.decision,
      "onbehalf.reason_code": f.reason_code,
      "onbehalf.source": f.source,
      "onbehalf.call_id": f.call_id,
      ...(f.tool === null ? {} : { "onbehalf.tool": f.tool }),
      ...(f.tenant === null ? {} : { "onbehalf.tenant": f.tenant }),
      ...(f.agent === null ? {} : { "onbehalf.agent": f.agent }),
      ...(f.user === null ? {} : { "enduser.id": f.user }),
    });
    if (f.decision === "deny") span.setStatus({ code: SpanStatusCode.ERROR, message: f.reason_code });
  }
  span.end();
}

/**
 * The context a run's span starts in: the active one when its span is in the run's trace (or the run names no
 * trace), else one whose remote parent carries the run's trace id. The parent's span id is the trace id's low
 * half: the same for every call of a run, so a trace viewer shows them under one (absent) root.
 */
function parentIn(traceId: string | undefined): Context {
  const active = context.active();
  if (traceId === undefined || trace.getSpanContext(active)?.traceId === traceId) return active;
  const low = traceId.slice(16);
  return trace.setSpanContext(active, {
    traceId,
    spanId: low === NO_PARENT_SPAN ? "0000000000000001" : low,
    traceFlags: TraceFlags.SAMPLED,
    isRemote: true,
  });
}
