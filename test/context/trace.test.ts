import { describe, expect, it } from "vitest";
import { newTraceId, traceIdOf } from "../../src/context/trace.js";

describe("trace ids (W3C Trace Context)", () => {
  it("reads the trace id of a valid traceparent, and ignores an invalid one", () => {
    const id = "4bf92f3577b34da6a3ce929d0e0e4736";
    expect(traceIdOf(`00-${id}-00f067aa0ba902b7-01`)).toBe(id);
    expect(traceIdOf(`  00-${id}-00f067aa0ba902b7-00 `)).toBe(id);
    // a future version may append fields; version 00 may not, and ff is invalid
    expect(traceIdOf(`cc-${id}-00f067aa0ba902b7-01-what-the-future-says`)).toBe(id);
    expect(traceIdOf(`00-${id}-00f067aa0ba902b7-01-extra`)).toBeUndefined();
    expect(traceIdOf(`ff-${id}-00f067aa0ba902b7-01`)).toBeUndefined();
    expect(traceIdOf(`00-${"0".repeat(32)}-00f067aa0ba902b7-01`)).toBeUndefined();
    expect(traceIdOf(`00-${id}-0000000000000000-01`)).toBeUndefined();
    expect(traceIdOf(`00-${id.toUpperCase()}-00f067aa0ba902b7-01`)).toBeUndefined();
    expect(traceIdOf("garbage")).toBeUndefined();
    expect(traceIdOf(undefined)).toBeUndefined();
    expect(traceIdOf([`00-${id}-00f067aa0ba902b7-01`])).toBeUndefined(); // a repeated header is ambiguous
  });

  it("makes new trace ids in W3C form, each different", () => {
    const ids = new Set(Array.from({ length: 1000 }, newTraceId));
    expect(ids.size).toBe(1000);
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{32}$/);
  });
});
