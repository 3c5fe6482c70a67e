/** The control plane's Prometheus metrics: documented exactly, counters that count, labels no caller can grow. */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { OnbehalfServer } from "../../src/server/app.js";
import { type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { call, startTestServer, userToken } from "../support/server.js";

let idp: OidcProviderHandle;
let server: OnbehalfServer;
let alice: string;

beforeAll(async () => {
  idp = await startOidcProvider();
  server = await startTestServer(idp);
  alice = await userToken(idp, "alice");
});
afterAll(async () => {
  await server?.close();
  await idp?.close();
});

const scrape = async () => (await call(server.url, "GET", "/metrics")).body as string;

/** `name → type` of every metric in an exposition text. */
function typesOf(text: string): Map<string, string> {
  return new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
}

/** Every value each label takes in an exposition text, as `metric.label → values`. */
function labelValues(text: string): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const [, name, labels] of text.matchAll(/^(\w+)\{([^}]*)\}/gm)) {
    for (const [, key, value] of labels!.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      const k = `${name!.replace(/_(bucket|sum|count)$/, "")}.${key}`;
      if (!out.has(k)) out.set(k, new Set());
      out.get(k)!.add(value!);
    }
  }
  return out;
}

describe("GET /metrics", () => {
  it("exposes exactly the metrics docs/observability.md lists, with the types it says", async () => {
    const doc = readFileSync(join(import.meta.dirname, "../../docs/observability.md"), "utf8");
    const documented = new Map(
      [...doc.matchAll(/^\| `(onbehalf_\w+)` \| (counter|gauge|histogram) \|/gm)].map((m) => [m[1]!, m[2]!]),
    );
    const exposed = typesOf(await scrape());
    expect(documented.size).toBeGreaterThan(5);
    expect(Object.fromEntries(exposed)).toEqual(Object.fromEntries(documented));
  });

  it("counts committed audit records with a counter that only grows", async () => {
    const before = await scrape();
    expect(typesOf(before).get("onbehalf_audit_committed_total")).toBe("counter");
    const value = (text: string) => Number(/^onbehalf_audit_committed_total (\d+)/m.exec(text)?.[1]);
    await call(server.url, "POST", "/v1/check", {
      token: alice,
      body: { tool: "get_customer", args: { id: "c-1" }, agent: { name: "support-bot" } },
    });
    await server.governor.flush();
    expect(value(await scrape())).toBeGreaterThan(value(before));
  });

  it("observes decision, request and latency histograms with fixed labels", async () => {
    await call(server.url, "POST", "/v1/check", {
      token: alice,
      body: { tool: "get_customer", args: { id: "c-2" }, agent: { name: "support-bot" } },
    });
    const text = await scrape();
    expect(text).toMatch(/onbehalf_decision_duration_seconds_count\{source="api",decision="allow"\} [1-9]/);
    expect(text).toMatch(
      /onbehalf_http_request_duration_seconds_count\{route="\/v1\/check",method="POST",status_class="2xx"\} [1-9]/,
    );
    expect(text).toMatch(/onbehalf_decisions_total\{decision="allow",reason_code="ok"\} [1-9]/);
  });

  it("never makes a label of what a caller sends: a weird tool name, path or method adds no label value", async () => {
    const weird = 'x"}\nonbehalf_evil 1 <script>';
    const before = labelValues(await scrape());
    await call(server.url, "POST", "/v1/check", {
      token: alice,
      body: { tool: "no-such-tool_Ω-1234", args: {}, agent: { name: "agent-Ω" } },
    });
    await call(server.url, "POST", "/v1/check", {
      body: { tool: weird.replace(/\n/g, ""), args: {}, agent: { name: "x" } },
    });
    for (const path of [
      "/v1/calls/some-secret-id/result",
      "/nope/%22%7D",
      "/v1/approvals/abc?token=s3cret",
    ]) {
      await call(server.url, "POST", path, { token: alice, body: {} });
    }
    await fetch(`${server.url}/v1/check`, { method: "PROPFIND" });
    const after = labelValues(await scrape());
    const allowed: Record<string, RegExp> = {
      route: /^(\/[\w/:.-]*|unknown)$/,
      method: /^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS|other)$/,
      status: /^\d{3}$/,
      status_class: /^[1-5]xx$/,
      decision: /^(allow|deny|ask)$/,
      source: /^(inproc|api|mcp|spool)$/,
    };
    for (const [key, values] of after) {
      const label = key.split(".")[1]!;
      for (const v of values) {
        expect(v).not.toMatch(/Ω|secret|script|evil|no-such-tool/);
        if (allowed[label] !== undefined) expect(v, key).toMatch(allowed[label]);
      }
    }
    // the routes seen are the server's templates
    const routes = [...(after.get("onbehalf_http_requests_total.route") ?? [])];
    expect(routes).toContain("/v1/calls/:id/result");
    expect(routes).toContain("unknown");
    expect(
      routes.every(
        (r) =>
          r === "unknown" ||
          server.app.hasRoute({ url: r, method: "POST" }) ||
          server.app.hasRoute({ url: r, method: "GET" }),
      ),
    ).toBe(true);
    expect(before.size).toBeGreaterThan(0);
  });
});
