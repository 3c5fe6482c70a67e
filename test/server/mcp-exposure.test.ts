/**
 * An upstream exposed under its own names (`prefix: ""`) beside a prefixed one, with the official MCP client:
 * its tools keep their names, a name it shares with the other upstream is hidden and says so in the audit, and
 * two unprefixed upstreams are refused at config time.
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfigObject } from "../../src/govern/config.js";
import type { OnbehalfServer } from "../../src/server/app.js";
import { type HttpUpstream, startHttpUpstream } from "../support/mcp-upstream.js";
import { type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { ADMIN, call, serverConfig, startTestServer } from "../support/server.js";

const GATEWAY = "https://gateway.onbehalf.test";
const mail = {
  name: "mail",
  transport: "stdio" as const,
  command: process.execPath,
  // it also lists crm.get_customer: a name of the crm upstream
  args: ["--import", "tsx", "test/fixtures/stdio-upstream.ts", "--also-list", "crm.get_customer"],
  prefix: "",
  timeout_ms: 5_000,
};
let idp: OidcProviderHandle;
let crm: HttpUpstream;
let server: OnbehalfServer;
const clients: Client[] = [];

beforeAll(async () => {
  idp = await startOidcProvider();
  crm = await startHttpUpstream();
  const base = serverConfig(idp);
  server = await startTestServer(idp, {
    server: { ...base.server, public_url: GATEWAY },
    issuers: [{ issuer: idp.issuer, audience: [`${GATEWAY}/mcp`], preset: "generic" }],
    tools: [
      { name: "read_email", required_scopes: ["email.read"] },
      { name: "crm.get_customer", required_scopes: ["customers:read"] },
    ],
    tenants: [{ id: "acme", policy: { defaults: { "*": { permission: "allow" } } } }],
    upstreams: [
      { name: "crm", transport: "streamable-http", url: crm.url },
      { ...mail, expose: "all", default_scopes: ["email.read"] },
    ],
  });
});
afterAll(async () => {
  await Promise.allSettled(clients.map((c) => c.close()));
  await server?.close();
  await crm?.stop();
  await idp?.close();
});

async function connect(scope: string): Promise<Client> {
  const bearer = await idp.getToken({
    resource: `${GATEWAY}/mcp`,
    scope,
    claims: { sub: "alice", tenant: "acme" },
  });
  const client = new Client({ name: "support-bot", version: "1.0.0" });
  await client.connect(
    new StreamableHTTPClientTransport(new URL(`${server.url}/mcp`), {
      requestInit: { headers: { authorization: `Bearer ${bearer}` } },
    }),
  );
  clients.push(client);
  return client;
}

const text = (r: unknown) => ((r as CallToolResult).content[0] as { text: string }).text;

describe("exposing an upstream without a prefix", () => {
  it("offers its tools under their own names, beside another upstream's prefixed ones", async () => {
    const client = await connect("customers:read email.read");
    const names = (await client.listTools()).tools.map((t) => t.name).sort();
    expect(names).toEqual(["crash", "crm.get_customer", "read_email", "slow"]);
    const r = await client.callTool({ name: "read_email", arguments: { mailbox: "a@acme.test" } });
    expect(r.isError).toBeFalsy();
    expect(JSON.parse(text(r))).toMatchObject({ mailbox: "a@acme.test", messages: 3 });
  });

  it("hides a tool it lists under another upstream's name, never routing that name to it, and audits why", async () => {
    const client = await connect("customers:read email.read");
    const r = await client.callTool({ name: "crm.get_customer", arguments: { id: "c-1" } });
    expect(JSON.parse(text(r))).toMatchObject({ id: "c-1", name: "Ada" }); // the crm upstream's, not the impostor's
    await crm.stop();
    try {
      // the owner is down: the name is still not routed to the unprefixed upstream
      const down = await client.callTool({ name: "crm.get_customer", arguments: { id: "c-1" } });
      expect(down.isError).toBe(true);
      expect(text(down)).not.toContain("impostor");
    } finally {
      await crm.start();
    }
    await server.governor.flush();
    const records = (
      await call(server.url, "GET", "/v1/audit?tool=crm.get_customer&limit=50", { token: ADMIN })
    ).body.records as { kind: string; decision: string; reason: string }[];
    const admin = records.filter((x) => x.kind === "admin" && x.decision === "deny");
    expect(admin.map((x) => x.reason)).toEqual([
      "upstream mail lists crm.get_customer, a name of upstream crm (crm.…): hidden, so no call meant for crm reaches mail",
    ]);
  });

  it("refuses two upstreams without a prefix at config time, naming both", () => {
    const config = {
      upstreams: [mail, { ...mail, name: "archive" }],
    };
    expect(() => loadConfigObject(config)).toThrow(
      /upstreams mail and archive are both exposed without a prefix \(prefix: ""\)/,
    );
  });
});
