/**
 * OpenTelemetry spans with the real JS SDK installed, as an application would: a span per governed call in the
 * run's trace (its trace id is the audit record's), and a server span per control-plane request.
 */
import { context, propagation, SpanKind, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import {
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { OnbehalfServer } from "../../src/server/app.js";
import { testGovernor } from "../support/governor.js";
import { type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { principal } from "../support/principal.js";
import { call, startTestServer, userToken } from "../support/server.js";

const SECRET = "SECRET-ARG-5e1d";
const exporter = new InMemorySpanExporter();
const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });

let idp: OidcProviderHandle;
let server: OnbehalfServer;
let alice: string;

beforeAll(async () => {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  trace.setGlobalTracerProvider(provider);
  idp = await startOidcProvider();
  server = await startTestServer(idp);
  alice = await userToken(idp, "alice");
});
afterAll(async () => {
  await server?.close();
  await idp?.close();
  trace.disable();
  context.disable();
  propagation.disable();
});
beforeEach(() => exporter.reset());

/** The finished spans (the SDK exports asynchronously: flushed first). */
async function finished(): Promise<ReadableSpan[]> {
  await provider.forceFlush();
  return exporter.getFinishedSpans();
}
const named = async (prefix: string) => (await finished()).filter((s) => s.name.startsWith(prefix));
const noSecrets = (s: ReadableSpan) => expect(JSON.stringify(s.attributes)).not.toContain(SECRET);

describe("a span per governed call", () => {
  it("in-process: a child of the application's span, in its trace, with the decision's attributes", async () => {
    const { gov } = await testGovernor();
    try {
      const getCustomer = gov.governed({ name: "get_customer", execute: async () => ({ id: "c-1" }) });
      const alice = principal({ user: "alice", tenant: "acme", scopes: ["customers:read"] });
      const app = trace.getTracer("the-application");
      const traceId = await app.startActiveSpan("agent run", async (root) => {
        await gov.runAs(alice, { agent: "support-bot" }, () => getCustomer({ id: "c-1", note: SECRET }));
        await gov
          .runAs(alice, { agent: "support-bot" }, () =>
            gov.governed({ name: "issue_refund", execute: () => 1 })({}),
          )
          .catch(() => {});
        root.end();
        return root.spanContext().traceId;
      });
      const [allowed, denied] = await named("onbehalf.decide");
      expect(allowed).toBeDefined();
      expect(allowed!.name).toBe("onbehalf.decide get_customer");
      expect(allowed!.spanContext().traceId).toBe(traceId);
      expect(allowed!.parentSpanContext?.spanId).toBe((await named("agent run"))[0]!.spanContext().spanId);
      expect(allowed!.attributes).toMatchObject({
        "onbehalf.tool": "get_customer",
        "onbehalf.tenant": "acme",
        "onbehalf.agent": "support-bot",
        "onbehalf.decision": "allow",
        "onbehalf.reason_code": "ok",
        "onbehalf.source": "inproc",
        "enduser.id": "alice",
      });
      expect(denied!.attributes).toMatchObject({
        "onbehalf.decision": "deny",
        "onbehalf.reason_code": "missing_scope",
      });
      noSecrets(allowed!);
      const records = (await gov.queryAudit({ trace_id: traceId })).records;
      expect(records.length).toBeGreaterThan(0);
      expect(records.every((r) => r.trace_id === traceId)).toBe(true);
      expect(records.map((r) => r.call_id)).toContain(allowed!.attributes["onbehalf.call_id"]);
    } finally {
      await gov.close();
    }
  });

  it("over HTTP: a server span per request, the caller's traceparent its parent, the decision span its child", async () => {
    const traceId = "0af7651916cd43dd8448eb211c80319c";
    const parent = "b7ad6b7169203331";
    const r = await fetch(`${server.url}/v1/check`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${alice}`,
        "content-type": "application/json",
        traceparent: `00-${traceId}-${parent}-01`,
      },
      body: JSON.stringify({ tool: "get_customer", args: { note: SECRET }, agent: { name: "support-bot" } }),
    });
    const body = (await r.json()) as { trace_id: string; call_id: string };
    expect(body.trace_id).toBe(traceId);
    const http = await named("HTTP POST /v1/check");
    expect(http).toHaveLength(1);
    expect(http[0]!.kind).toBe(SpanKind.SERVER);
    expect(http[0]!.spanContext().traceId).toBe(traceId);
    expect(http[0]!.parentSpanContext?.spanId).toBe(parent);
    expect(http[0]!.attributes).toMatchObject({
      "http.request.method": "POST",
      "http.route": "/v1/check",
      "http.response.status_code": 200,
    });
    const decide = (await named("onbehalf.decide"))[0]!;
    expect(decide.spanContext().traceId).toBe(traceId);
    expect(decide.parentSpanContext?.spanId).toBe(http[0]!.spanContext().spanId);
    expect(decide.attributes).toMatchObject({ "onbehalf.source": "api", "onbehalf.call_id": body.call_id });
    for (const s of await finished()) noSecrets(s);
    expect(JSON.stringify((await finished()).map((s) => s.attributes))).not.toContain(alice);
    const record = (await server.governor.queryAudit({ trace_id: traceId })).records[0]!;
    expect(record.call_id).toBe(body.call_id);
  });

  it("over HTTP without a trace: the run takes the request span's trace, and the audit record says so", async () => {
    const r = await call(server.url, "POST", "/v1/check", {
      token: alice,
      body: { tool: "get_customer", args: {}, agent: { name: "support-bot" } },
    });
    const http = (await named("HTTP POST /v1/check"))[0]!;
    expect(r.body.trace_id).toBe(http.spanContext().traceId);
    expect((await named("onbehalf.decide"))[0]!.spanContext().traceId).toBe(r.body.trace_id);
  });

  it("a call naming another trace than its request's is traced in the trace it names", async () => {
    const named_ = "11111111111111112222222222222222";
    const r = await call(server.url, "POST", "/v1/check", {
      token: alice,
      body: { tool: "no_such_tool", args: {}, agent: { name: "support-bot" }, trace_id: named_ },
    });
    const decide = (await named("onbehalf.decide"))[0]!;
    expect(decide.spanContext().traceId).toBe(named_);
    expect(decide.name).toBe("onbehalf.decide"); // an undeclared name is not a span name
    expect(decide.attributes["onbehalf.tool"]).toBe("no_such_tool");
    expect(r.body.trace_id).toBe(named_);
  });
});
