/**
 * `/mcp` as the Streamable HTTP transport's security section asks (Origin and Host validated against DNS
 * rebinding), with the official MCP client and raw requests, in front of a real upstream.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { main } from "../../src/cli/commands.js";
import { type OnbehalfServer, startServer } from "../../src/server/app.js";
import { transportGuard } from "../../src/server/mcp-transport-guard.js";
import { type HttpUpstream, startHttpUpstream } from "../support/mcp-upstream.js";
import { type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { ADMIN, call, serverConfig, startTestServer } from "../support/server.js";

const GATEWAY = "https://gateway.onbehalf.test";
let idp: OidcProviderHandle;
let crm: HttpUpstream;
let server: OnbehalfServer;
const clients: Client[] = [];

beforeAll(async () => {
  idp = await startOidcProvider();
  crm = await startHttpUpstream();
  const base = serverConfig(idp);
  server = await startTestServer(idp, {
    server: { ...base.server, public_url: GATEWAY, mcp_allowed_origins: ["https://console.example"] },
    issuers: [{ issuer: idp.issuer, audience: [`${GATEWAY}/mcp`], preset: "generic" }],
    tools: [{ name: "crm.whoami" }],
    tenants: [{ id: "acme", policy: { defaults: { "*": { permission: "allow" } } } }],
    upstreams: [{ name: "crm", transport: "streamable-http", url: crm.url }],
  });
});
afterAll(async () => {
  await Promise.allSettled(clients.map((c) => c.close()));
  await server?.close();
  await crm?.stop();
  await idp?.close();
});

const token = (sub: string) =>
  idp.getToken({ resource: `${GATEWAY}/mcp`, scope: "customers:read", claims: { sub, tenant: "acme" } });

/** The official client, sending `headers` (an Origin, say) on every request. */
async function connect(bearer: string, headers: Record<string, string> = {}): Promise<Client> {
  const client = new Client({ name: "browser-app", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(`${server.url}/mcp`), {
    requestInit: { headers: { authorization: `Bearer ${bearer}`, ...headers } },
  });
  await client.connect(transport);
  clients.push(client);
  return client;
}

/** A raw `initialize`, then a `tools/call`, with the given headers. */
async function rawCall(bearer: string, headers: Record<string, string>): Promise<Response> {
  return fetch(`${server.url}/mcp`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${bearer}`,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      ...headers,
    },
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "initialize",
      params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "x", version: "1" } },
    }),
  });
}

async function auditedCalls(user: string): Promise<unknown[]> {
  await server.governor.flush();
  const records = (await call(server.url, "GET", `/v1/audit?user=${user}`, { token: ADMIN })).body.records;
  return records.filter((r: { kind: string }) => r.kind !== "admin");
}

describe("/mcp transport hygiene", () => {
  it("refuses a forged Origin with 403 and a JSON-RPC error, before anything is decided or audited", async () => {
    const bearer = await token("eve");
    const res = await rawCall(bearer, { origin: "http://evil.example" });
    expect(res.status).toBe(403);
    expect(await res.json()).toEqual({
      jsonrpc: "2.0",
      error: {
        code: -32000,
        message:
          "Origin http://evil.example is not allowed to reach /mcp (list it in server.mcp_allowed_origins)",
      },
      id: null,
    });
    // The official client, driven from a page on that origin, gets nowhere either.
    await expect(connect(bearer, { origin: "http://evil.example" })).rejects.toMatchObject({ code: 403 });
    // Without a token the answer is the same 403: the origin is checked first.
    const anonymous = await fetch(`${server.url}/mcp`, {
      method: "POST",
      headers: { origin: "http://evil.example", "content-type": "application/json" },
      body: "{}",
    });
    expect(anonymous.status).toBe(403);
    expect(await auditedCalls("eve")).toEqual([]);
  });

  it("accepts an Origin on the allow-list, public_url's origin, and requests without Origin", async () => {
    for (const headers of [{ origin: "https://console.example" }, { origin: GATEWAY }, {}]) {
      const client = await connect(await token("alice"), headers);
      const r = await client.callTool({ name: "crm.whoami", arguments: {} });
      expect(r.isError).toBeFalsy();
    }
    expect(await auditedCalls("alice")).toHaveLength(6); // an attempt and an outcome per call
  });

  it("with an allow-list, refuses loopback origins it does not list", async () => {
    const res = await rawCall(await token("alice"), { origin: "http://localhost:3000" });
    expect(res.status).toBe(403);
  });

  it("refuses a Host that is not this server's, and takes 127.0.0.1 and localhost on a loopback bind", async () => {
    const bearer = await token("alice");
    const port = new URL(server.url).port;
    // fetch drops a Host it is given: node:http sends it as a rebound page's browser would
    const forged = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(
        `${server.url}/mcp`,
        { method: "POST", headers: { host: `rebound.example:${port}`, "content-type": "application/json" } },
        (res) => {
          let body = "";
          res.on("data", (d) => (body += String(d)));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        },
      );
      req.on("error", reject);
      req.end("{}");
    });
    expect(forged.status).toBe(403);
    expect(JSON.parse(forged.body).error.message).toMatch(/^Host rebound\.example is not this server's/);
    const viaLocalhost = new StreamableHTTPClientTransport(new URL(`http://localhost:${port}/mcp`), {
      requestInit: { headers: { authorization: `Bearer ${bearer}` } },
    });
    const client = new Client({ name: "local", version: "1.0.0" });
    await client.connect(viaLocalhost);
    clients.push(client);
    expect((await client.callTool({ name: "crm.whoami", arguments: {} })).isError).toBeFalsy();
  });
});

describe("the Origin and Host defaults", () => {
  it("accepts loopback origins on a loopback bind when no allow-list is set, and only public_url's otherwise", () => {
    const loopback = transportGuard({
      allowedOrigins: undefined,
      boundHost: "127.0.0.1",
      publicUrls: () => [],
    });
    expect(loopback({ host: "127.0.0.1:8787", origin: "http://localhost:6274" })).toBeNull();
    expect(loopback({ host: "localhost:8787", origin: "http://127.0.0.1:3000" })).toBeNull();
    expect(loopback({ host: "[::1]:8787" })).toBeNull();
    expect(loopback({ host: "127.0.0.1:8787", origin: "http://evil.example" })?.status).toBe(403);
    expect(loopback({ host: "127.0.0.1:8787", origin: "null" })?.status).toBe(403);
    expect(loopback({ host: "evil.example:8787" })?.status).toBe(403);
    const everywhere = transportGuard({
      allowedOrigins: undefined,
      boundHost: "0.0.0.0",
      publicUrls: () => ["https://onbehalf.example.com", "https://onbehalf.example.com/mcp"],
    });
    expect(everywhere({ host: "onbehalf.example.com", origin: "https://onbehalf.example.com" })).toBeNull();
    expect(everywhere({ host: "onbehalf.example.com", origin: "http://localhost:3000" })?.status).toBe(403);
    expect(everywhere({ host: "10.0.0.7:8787" })?.status).toBe(403);
  });
});

describe("a development token for the gateway", () => {
  it("dev-token --audience <public_url>/mcp mints a token /mcp accepts; the default audience is refused there", async () => {
    const dir = mkdtempSync(join(tmpdir(), "onbehalf-devmcp-"));
    const config = join(dir, "onbehalf.yaml");
    writeFileSync(
      config,
      [
        "server: { port: 0, public_url: http://127.0.0.1:8787 }",
        "dev_issuer: true",
        "tools: [{ name: crm.whoami }]",
        "tenants: [{ id: acme, policy: { defaults: { '*': { permission: allow } } } }]",
        `upstreams: [{ name: crm, transport: streamable-http, url: "${crm.url}" }]`,
        "audit: { store: 'sqlite:./audit.db' }",
      ].join("\n"),
    );
    const mint = async (...extra: string[]) => {
      const out: string[] = [];
      const err: string[] = [];
      const argv = ["dev-token", "--config", config, "--sub", "alice", "--tenant", "acme", ...extra];
      expect(await main(argv, { out: (l) => out.push(l), err: (l) => err.push(l) })).toBe(0);
      return { token: out.join(""), err: err.join("\n") };
    };
    const forMcp = await mint("--audience", "http://127.0.0.1:8787/mcp");
    expect(forMcp.err).toBe("");
    const claims = JSON.parse(Buffer.from(forMcp.token.split(".")[1]!, "base64url").toString());
    expect(claims.aud).toBe("http://127.0.0.1:8787/mcp");
    expect((await mint("--audience", "https://elsewhere.example")).err).toMatch(
      /^note: this config's server accepts/,
    );
    const dev = await startServer({ config, warn: () => {} });
    try {
      const client = new Client({ name: "newcomer", version: "1.0.0" });
      await client.connect(
        new StreamableHTTPClientTransport(new URL(`${dev.url}/mcp`), {
          requestInit: { headers: { authorization: `Bearer ${forMcp.token}` } },
        }),
      );
      expect((await client.callTool({ name: "crm.whoami", arguments: {} })).isError).toBeFalsy();
      await client.close();
      const plain = await mint();
      const refused = new Client({ name: "newcomer", version: "1.0.0" });
      await expect(
        refused.connect(
          new StreamableHTTPClientTransport(new URL(`${dev.url}/mcp`), {
            requestInit: { headers: { authorization: `Bearer ${plain.token}` } },
          }),
        ),
      ).rejects.toMatchObject({ code: 401 });
    } finally {
      await dev.close();
    }
  });
});
