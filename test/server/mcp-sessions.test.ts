/**
 * MCP gateway sessions are bounded: one user keeps at most `max_mcp_sessions_per_user`, the instance at most
 * `max_mcp_sessions` (the least recently used goes), and a session idle for `mcp_session_idle_seconds` is closed,
 * its upstream sessions ended with it. Each closing is counted.
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CreateMessageRequestSchema } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { OnbehalfServer } from "../../src/server/app.js";
import { pingSession, type RelayUpstream, startRelayUpstream } from "../support/mcp-relay-upstream.js";
import { DEFAULT_RESOURCE, type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { metricValue, serverConfig, startTestServer } from "../support/server.js";

const GATEWAY = "https://gateway.onbehalf.test";
let idp: OidcProviderHandle;
let upstream: RelayUpstream;
const clients: Client[] = [];

beforeAll(async () => {
  idp = await startOidcProvider();
  upstream = await startRelayUpstream();
});
afterAll(async () => {
  await Promise.allSettled(clients.map((c) => c.close()));
  await upstream?.stop();
  await idp?.close();
});

function gateway(sessions: Record<string, number>): Promise<OnbehalfServer> {
  const base = serverConfig(idp);
  return startTestServer(idp, {
    server: { ...base.server, public_url: GATEWAY, ...sessions },
    issuers: [{ issuer: idp.issuer, audience: [DEFAULT_RESOURCE, `${GATEWAY}/mcp`], preset: "generic" }],
    tools: [{ name: "relay.stray" }],
    tenants: [{ id: "acme", policy: { defaults: { "*": { permission: "allow" } } } }],
    upstreams: [
      {
        name: "relay",
        transport: "streamable-http",
        url: upstream.url,
        timeout_ms: 10_000,
        auth: { type: "obo", audience: "https://relay.test" },
      },
    ],
  });
}

async function open(server: OnbehalfServer, user: string) {
  const bearer = await idp.getToken({
    resource: `${GATEWAY}/mcp`,
    scope: "openid",
    claims: { sub: user, tenant: "acme" },
  });
  const client = new Client({ name: `${user}-agent`, version: "1.0.0" }, { capabilities: { sampling: {} } });
  client.setRequestHandler(CreateMessageRequestSchema, async () => ({
    model: `${user}-model`,
    role: "assistant",
    content: { type: "text", text: "ok" },
  }));
  const transport = new StreamableHTTPClientTransport(new URL(`${server.url}/mcp`), {
    requestInit: { headers: { authorization: `Bearer ${bearer}` } },
  });
  await client.connect(transport);
  clients.push(client);
  const id = transport.sessionId as string;
  /** The status of a `ping` on this session, sent as raw HTTP (the client would reconnect). */
  const ping = () =>
    fetch(`${server.url}/mcp`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${bearer}`,
        "mcp-session-id": id,
        "mcp-protocol-version": "2025-06-18",
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
      },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" }),
    }).then((r) => r.status);
  return { client, id, ping };
}

const closed = (server: OnbehalfServer, why: string) =>
  metricValue(server.url, `onbehalf_state_evictions_total{what="mcp_session",why="${why}"}`);

describe("MCP session bounds", () => {
  let server: OnbehalfServer;
  beforeAll(async () => {
    server = await gateway({
      max_mcp_sessions: 3,
      max_mcp_sessions_per_user: 2,
      mcp_session_idle_seconds: 600,
    });
  });
  afterAll(async () => {
    await server?.close();
  });

  it("closes a user's least recently used session when they open one more than their bound", async () => {
    const first = await open(server, "ivan");
    const second = await open(server, "ivan");
    expect(await first.ping()).toBe(200); // first is now the most recently used
    const third = await open(server, "ivan");
    expect(await second.ping()).toBe(404);
    expect(await first.ping()).toBe(200);
    expect(await third.ping()).toBe(200);
    expect(await closed(server, "user_bound")).toBe(1);
  });

  it("closes the least recently used session of anyone at the instance's bound", async () => {
    // ivan holds two sessions; one more user's session fills the bound, the next one makes room
    const kim = await open(server, "kim");
    const lee = await open(server, "lee");
    expect(await kim.ping()).toBe(200);
    expect(await lee.ping()).toBe(200);
    expect(await closed(server, "bound")).toBe(1); // ivan's least recent went for lee's
    const mo = await open(server, "mo");
    expect(await closed(server, "bound")).toBe(2);
    expect(await kim.ping()).toBe(200);
    expect(await lee.ping()).toBe(200);
    expect(await mo.ping()).toBe(200);
  });
});

describe("idle MCP sessions", () => {
  let server: OnbehalfServer;
  beforeAll(async () => {
    server = await gateway({ mcp_session_idle_seconds: 1 });
  });
  afterAll(async () => {
    await server?.close();
  });

  it("closes a session idle for its time, and ends its upstream session with it", async () => {
    const judy = await open(server, "judy");
    await judy.client.callTool({ name: "relay.stray", arguments: { tag: "judy-idle" } });
    const theirs = [...upstream.subjects].filter(([, subs]) => subs.has("judy")).map(([id]) => id);
    expect(theirs).toHaveLength(1);
    const upstreamPing = () => pingSession(upstream.url, theirs[0] as string);
    expect(await upstreamPing()).toBe(200);
    // kept alive while used
    for (let i = 0; i < 4; i++) {
      await new Promise((r) => setTimeout(r, 400));
      expect(await judy.ping()).toBe(200);
    }
    // left alone (a ping would keep it alive): closed within its idle time and a sweep (a quarter of it)
    await new Promise((r) => setTimeout(r, 2_000));
    expect(await judy.ping()).toBe(404);
    await vi.waitFor(async () => expect(await upstreamPing()).toBe(404), { timeout: 5_000, interval: 200 });
    expect(await closed(server, "idle")).toBe(1);
  });
});
