/** Committed audit records sent to an OTLP/HTTP receiver; a receiver that is away loses nothing of the audit. */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { OnbehalfServer } from "../../src/server/app.js";
import { type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { call, startTestServer, userToken } from "../support/server.js";

type Attr = { key: string; value: { stringValue?: string; intValue?: string } };
type LogRecord = { attributes: Attr[]; severityText: string; eventName: string };

/**
 * An OTLP/HTTP logs receiver, a stand-in for an OpenTelemetry Collector (no collector can run on this machine):
 * it takes what a collector's OTLP/HTTP JSON endpoint takes, every log record posted to /v1/logs, with the
 * headers it came with, and refuses any other path or content type.
 */
async function startReceiver(): Promise<{
  url: string;
  records: LogRecord[];
  headers: Record<string, string | string[] | undefined>[];
  close(): Promise<void>;
}> {
  const records: LogRecord[] = [];
  const headers: Record<string, string | string[] | undefined>[] = [];
  const server: Server = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      if (req.url !== "/v1/logs" || req.headers["content-type"] !== "application/json") {
        res.writeHead(404).end();
        return;
      }
      headers.push(req.headers);
      const parsed = JSON.parse(body) as {
        resourceLogs: { scopeLogs: { logRecords: LogRecord[] }[] }[];
      };
      for (const rl of parsed.resourceLogs) for (const sl of rl.scopeLogs) records.push(...sl.logRecords);
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    records,
    headers,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

const attrs = (r: LogRecord) =>
  Object.fromEntries(r.attributes.map((a) => [a.key, a.value.stringValue ?? a.value.intValue]));

async function until(what: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!what()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 20));
  }
}

let idp: OidcProviderHandle;
let alice: string;
beforeAll(async () => {
  idp = await startOidcProvider();
  alice = await userToken(idp, "alice");
});
afterAll(async () => {
  await idp?.close();
});

const metric = async (server: OnbehalfServer, name: string) => {
  const text = (await call(server.url, "GET", "/metrics")).body as string;
  return Number(new RegExp(`^${name} (\\d+)`, "m").exec(text)?.[1]);
};

describe("audit.otlp", () => {
  it("sends each committed record as an OTLP log record: user, tool, decision, trace id, sequence number", async () => {
    const receiver = await startReceiver();
    const server = await startTestServer(idp, {
      audit: {
        store: "sqlite::memory:",
        flush_ms: 1,
        otlp: { endpoint: receiver.url, headers: { "x-collector-key": "k-123" } },
      },
    });
    try {
      const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
      const r = await call(server.url, "POST", "/v1/check", {
        token: alice,
        body: {
          tool: "get_customer",
          args: { id: "c-1" },
          agent: { name: "support-bot" },
          trace_id: traceId,
        },
      });
      expect(r.status).toBe(200);
      await until(() => receiver.records.some((x) => attrs(x)["onbehalf.call_id"] === r.body.call_id));
      const sent = receiver.records.map(attrs).find((a) => a["onbehalf.call_id"] === r.body.call_id)!;
      const stored = (await server.governor.queryAudit({ trace_id: traceId })).records[0]!;
      expect(sent).toMatchObject({
        "enduser.id": "alice",
        "onbehalf.tenant": "acme",
        "onbehalf.tool": "get_customer",
        "onbehalf.decision": "allow",
        "onbehalf.reason_code": "ok",
        "onbehalf.trace_id": traceId,
        "onbehalf.seq": String(stored.seq),
        "onbehalf.leaf_hash": stored.leaf_hash,
        "onbehalf.kind": "attempt",
      });
      expect(receiver.headers[0]?.["x-collector-key"]).toBe("k-123");
      await until(() => receiver.records.length >= stored.seq);
      expect(await metric(server, "onbehalf_audit_otlp_exported_total")).toBeGreaterThanOrEqual(stored.seq);
      expect(await metric(server, "onbehalf_audit_otlp_failed_total")).toBe(0);
    } finally {
      await server.close();
      await receiver.close();
    }
  });

  it("never blocks or loses the audit when the receiver is away: the failures are counted", async () => {
    const receiver = await startReceiver();
    await receiver.close(); // nothing listens there now
    const server = await startTestServer(idp, {
      audit: { store: "sqlite::memory:", flush_ms: 1, otlp: { endpoint: receiver.url } },
    });
    try {
      for (let i = 0; i < 3; i++) {
        const r = await call(server.url, "POST", "/v1/check", {
          token: alice,
          body: { tool: "get_customer", args: { id: `c-${i}` }, agent: { name: "support-bot" } },
        });
        expect(r.status).toBe(200);
        expect(r.body.decision).toBe("allow");
      }
      await server.governor.flush();
      const stored = await server.governor.queryAudit({ user: "alice" });
      expect(stored.records.length).toBeGreaterThanOrEqual(3);
      expect(server.governor.auditLog.healthy).toBe(true);
      await until(() => (server.governor.auditLog.forwarder?.failed ?? 0) >= 3, 10_000);
      expect(await metric(server, "onbehalf_audit_otlp_failed_total")).toBeGreaterThanOrEqual(3);
      expect(await metric(server, "onbehalf_audit_otlp_exported_total")).toBe(0);
    } finally {
      await server.close();
    }
  });
});
