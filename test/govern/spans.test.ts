/** Decision spans cost nothing without an SDK, and join the run's trace with one. */
import { trace } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider } from "@opentelemetry/sdk-trace";
import { afterEach, describe, expect, it } from "vitest";
import { startDecisionSpan, tracingInstalled } from "../../src/govern/spans.js";

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";

afterEach(() => trace.disable());

describe("decision spans", () => {
  it("without an SDK: one shared span that records nothing", () => {
    expect(tracingInstalled()).toBe(false);
    const a = startDecisionSpan(TRACE);
    expect(a.isRecording()).toBe(false);
    expect(startDecisionSpan(undefined)).toBe(a);
  });

  it("with an SDK: a recording span in the run's trace, and none again once it is removed", () => {
    const exporter = new InMemorySpanExporter();
    trace.setGlobalTracerProvider(
      new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] }),
    );
    expect(tracingInstalled()).toBe(true);
    const span = startDecisionSpan(TRACE);
    expect(span.isRecording()).toBe(true);
    expect(span.spanContext().traceId).toBe(TRACE);
    span.end();
    trace.disable();
    expect(startDecisionSpan(TRACE).isRecording()).toBe(false);
  });
});
