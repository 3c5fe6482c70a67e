/**
 * A server span per control-plane request, through `@opentelemetry/api` (a no-op unless the application
 * installed an SDK). Its parent is what the SDK's propagator reads from the headers, else the W3C `traceparent`
 * header; it is the active span while the route runs, so the decision spans of the request are its children.
 * Attributes: method, route template, status. Never the URL, a header or a body.
 */
import {
  type Context,
  context,
  isSpanContextValid,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { traceIdOf } from "../context/trace.js";
import { tracingInstalled } from "../govern/spans.js";

const spans = new WeakMap<FastifyRequest, Span>();

/**
 * Trace every request of `app`: `route` names a request's route template (as the metrics do).
 *
 * @example
 * traceRequests(app, (req) => req.routeOptions.url ?? "unknown");
 */
export function traceRequests(app: FastifyInstance, route: (req: FastifyRequest) => string): void {
  app.addHook("onRequest", (req, _reply, done) => {
    if (!tracingInstalled()) return done(); // no SDK: no span, no work
    const name = `HTTP ${req.method} ${route(req)}`;
    const span = trace.getTracer("onbehalf").startSpan(
      name,
      {
        kind: SpanKind.SERVER,
        attributes: { "http.request.method": req.method, "http.route": route(req) },
      },
      parentOf(req),
    );
    spans.set(req, span);
    done();
  });
  // After the body is read (its stream's events run outside this request's context): the route runs in the span.
  app.addHook("preHandler", (req, _reply, done) => {
    const span = spans.get(req);
    if (span === undefined || !span.isRecording()) return done();
    context.with(trace.setSpan(context.active(), span), done);
  });
  app.addHook("onResponse", (req, reply, done) => {
    const span = spans.get(req);
    if (span !== undefined) {
      if (span.isRecording()) {
        span.setAttribute("http.response.status_code", reply.statusCode);
        if (reply.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
      }
      span.end();
    }
    done();
  });
}

/** The remote parent of a request: what the SDK's propagator reads, else its `traceparent` header. */
function parentOf(req: FastifyRequest): Context {
  const extracted = propagation.extract(ROOT_CONTEXT, req.headers);
  if (trace.getSpanContext(extracted) !== undefined) return extracted;
  const header = req.headers.traceparent;
  const traceId = traceIdOf(header);
  if (traceId === undefined || typeof header !== "string") return ROOT_CONTEXT;
  const [, , spanId = "", flags = "00"] = header.trim().split("-");
  const parent = { traceId, spanId, traceFlags: Number.parseInt(flags, 16) & 1, isRemote: true };
  return isSpanContextValid(parent) ? trace.setSpanContext(ROOT_CONTEXT, parent) : ROOT_CONTEXT;
}
