/**
 * One JSON log line per request: who, what, the decision and how long, and never a token or an argument; for
 * the MCP gateway, the tool call a `/mcp` request decided.
 */
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { OnbehalfServer } from "../../src/server/app.js";
import { connectMcp } from "../support/mcp-client.js";
import { type ResourceUpstream, startResourceUpstream } from "../support/mcp-resource-upstream.js";
import { type HttpUpstream, startHttpUpstream } from "../support/mcp-upstream.js";
import { type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { call, serverConfig, startTestServer, userToken } from "../support/server.js";

const SECRET = "SECRET-MARKER-7f3a9c";

let idp: OidcProviderHandle;
let server: OnbehalfServer;
let alice: string;
const lines: string[] = [];

beforeAll(async () => {
  idp = await startOidcProvider();
  server = await startTestServer(
    idp,
    {},
    { log: { level: "info", stream: { write: (l) => void lines.push(l) } } },
  );
  alice = await userToken(idp, "alice");
});
afterAll(async () => {
  await server?.close();
  await idp?.close();
});

const logged = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);

describe("request logs", () => {
  it("writes one line for a /v1/check with user, tenant, tool, decision, reason code, call id, route, status, latency", async () => {
    const r = await call(server.url, "POST", "/v1/check", {
      token: alice,
      body: { tool: "get_customer", args: { id: "c-1" }, agent: { name: "support-bot" } },
    });
    expect(r.status).toBe(200);
    const mine = logged().filter((l) => l["call_id"] === r.body.call_id);
    expect(mine).toHaveLength(1);
    expect(mine[0]).toMatchObject({
      level: 30,
      msg: "request",
      sub: "alice",
      user: "alice",
      tenant: "acme",
      tool: "get_customer",
      agent: "support-bot",
      decision: "allow",
      reason_code: "ok",
      route: "/v1/check",
      method: "POST",
      status: 200,
    });
    expect(typeof mine[0]!["latency_ms"]).toBe("number");
    expect(mine[0]!["reqId"]).toBeDefined();
  });

  it("logs every request once, by route template, denials included", async () => {
    const before = lines.length;
    const r = await call(server.url, "POST", "/v1/calls/not-a-call/result", {
      token: alice,
      body: { status: "ok" },
    });
    expect(r.status).toBe(404);
    const denied = await call(server.url, "POST", "/v1/check", {
      body: { tool: "get_customer", args: {}, agent: { name: "support-bot" } },
    });
    expect(denied.status).toBe(401);
    const mine = logged().slice(before);
    expect(mine.map((l) => [l["route"], l["status"]])).toEqual([
      ["/v1/calls/:id/result", 404],
      ["/v1/check", 401],
    ]);
  });

  it("never prints a bearer token, a cookie or a tool argument", async () => {
    const before = lines.length;
    const token = alice;
    await fetch(`${server.url}/v1/check?x=${SECRET}`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${token}`,
        cookie: `session=${SECRET}`,
        "content-type": "application/json",
      },
      body: JSON.stringify({
        tool: "get_customer",
        args: { id: "c-9", note: SECRET, nested: { password: SECRET } },
        agent: { name: "support-bot" },
      }),
    });
    // malformed bodies and bad tokens too
    await call(server.url, "POST", "/v1/check", {
      token: `${SECRET}.${SECRET}.${SECRET}`,
      body: { args: SECRET },
    });
    await call(server.url, "POST", "/v1/check", { token, raw: `{"args": "${SECRET}"` });
    await call(server.url, "POST", "/v1/verify", { token: `${SECRET}` });
    const text = lines.slice(before).join("");
    expect(lines.length - before).toBe(4);
    expect(text).not.toContain(SECRET);
    expect(text).not.toContain(token);
    expect(text).not.toContain(token.split(".")[2]!);
    expect(text.toLowerCase()).not.toContain("authorization");
  });
});

describe("request logs of the MCP gateway", () => {
  const GATEWAY = "https://gateway.onbehalf.test";
  const mcpLines: string[] = [];
  let crm: HttpUpstream;
  let kb: ResourceUpstream;
  let gateway: OnbehalfServer;
  let client: Client;

  beforeAll(async () => {
    crm = await startHttpUpstream();
    kb = await startResourceUpstream("kb");
    const base = serverConfig(idp);
    gateway = await startTestServer(
      idp,
      {
        server: { ...base.server, public_url: GATEWAY },
        issuers: [{ issuer: idp.issuer, audience: [`${GATEWAY}/mcp`], preset: "generic" }],
        tools: [
          { name: "crm.get_customer", required_scopes: ["customers:read"] },
          { name: "crm.list_orders", required_scopes: ["customers:read"] },
        ],
        resources: [{ uri: "kb://customers/*", required_scopes: ["customers:read"] }],
        tenants: [
          {
            id: "acme",
            policy: {
              defaults: { "*": { permission: "allow" } },
              rules: [
                {
                  id: "no-orders",
                  tools: ["crm.list_orders"],
                  when: "true",
                  effect: "deny",
                  reason: "not here",
                },
              ],
            },
          },
        ],
        upstreams: [
          { name: "crm", transport: "streamable-http", url: crm.url },
          { name: "kb", transport: "streamable-http", url: kb.url },
        ],
      },
      { log: { level: "info", stream: { write: (l) => void mcpLines.push(l) } } },
    );
    const bearer = await idp.getToken({
      resource: `${GATEWAY}/mcp`,
      scope: "customers:read",
      claims: { sub: "alice", tenant: "acme" },
    });
    client = await connectMcp(gateway.url, bearer);
  });
  /** The `/mcp` lines written since `before` that name a decided call. */
  const decidedLines = (before: number) =>
    mcpLines
      .slice(before)
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l["route"] === "/mcp" && l["tool"] !== undefined);

  afterAll(async () => {
    await client?.close();
    await gateway?.close();
    await crm?.stop();
    await kb?.stop();
  });

  it("names the tool call a /mcp request decided on its line, allowed or denied, and never its arguments", async () => {
    const before = mcpLines.length;
    const allowed = (await client.callTool({
      name: "crm.get_customer",
      arguments: { id: SECRET },
    })) as CallToolResult;
    expect(allowed.isError).toBeFalsy();
    const denied = (await client.callTool({
      name: "crm.list_orders",
      arguments: { customer: SECRET },
    })) as CallToolResult;
    expect(denied.isError).toBe(true);
    const calls = decidedLines(before);
    expect(calls.map((l) => [l["tool"], l["decision"], l["reason_code"]])).toEqual([
      ["crm.get_customer", "allow", "ok"],
      ["crm.list_orders", "deny", "rule_deny"],
    ]);
    for (const line of calls) {
      expect(line).toMatchObject({
        msg: "request",
        method: "POST",
        status: 200,
        sub: "alice",
        user: "alice",
        tenant: "acme",
        agent: "support-bot",
      });
      expect(line["call_id"]).toEqual(expect.any(String));
    }
    expect(mcpLines.slice(before).join("")).not.toContain(SECRET);
  });

  it("names a resource read the same way, as the call policy decided it as", async () => {
    const before = mcpLines.length;
    await client.readResource({ uri: "kb://customers/42" });
    const reads = decidedLines(before);
    expect(reads.map((l) => [l["tool"], l["decision"], l["user"]])).toEqual([
      ["resource:kb://customers/*", "allow", "alice"],
    ]);
  });

  it("leaves the query and fragment of a URI no entry declares out of the line", async () => {
    const before = mcpLines.length;
    await expect(client.readResource({ uri: `kb://nowhere/1?key=${SECRET}#${SECRET}` })).rejects.toThrow();
    const reads = decidedLines(before);
    expect(reads.map((l) => [l["tool"], l["decision"]])).toEqual([["resource:kb://nowhere/1", "deny"]]);
    expect(mcpLines.slice(before).join("")).not.toContain(SECRET);
  });
});
