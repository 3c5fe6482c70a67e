/**
 * The MCP gateway with the official MCP client, in front of two real upstream MCP servers (streamable HTTP
 * and stdio), with tokens from a real oidc-provider.
 */
import { createPublicKey, verify } from "node:crypto";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { oboVerifier } from "../../examples/mcp-backend/verify-obo.js";
import type { OnbehalfServer } from "../../src/server/app.js";
import { type HttpUpstream, startHttpUpstream } from "../support/mcp-upstream.js";
import { DEFAULT_RESOURCE, type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
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
    server: { ...base.server, public_url: GATEWAY, mcp_approval_wait_seconds: 3 },
    issuers: [{ issuer: idp.issuer, audience: [DEFAULT_RESOURCE, `${GATEWAY}/mcp`], preset: "generic" }],
    tools: [
      { name: "crm.get_customer", required_scopes: ["customers:read"], redact: ["ssn", "cards[*].number"] },
      { name: "crm.list_orders", required_scopes: ["orders:write"] },
      { name: "crm.whoami" },
      { name: "crm.huge" },
      { name: "mail.read_email", required_scopes: ["email.read"] },
    ],
    tenants: [
      {
        id: "acme",
        policy: {
          defaults: { "*": { permission: "allow", post_transform: "redact" } },
          rules: [
            {
              id: "vip-needs-a-manager",
              tools: ["crm.get_customer"],
              when: "args.id.startsWith('vip-')",
              effect: "ask",
              reason: "VIP records need a manager",
            },
          ],
        },
      },
    ],
    upstreams: [
      {
        name: "crm",
        transport: "streamable-http",
        url: crm.url,
        timeout_ms: 2_000,
        auth: { type: "obo", audience: "https://crm.test" },
      },
      {
        name: "mail",
        transport: "stdio",
        command: process.execPath,
        args: ["--import", "tsx", "test/fixtures/stdio-upstream.ts"],
        timeout_ms: 1_500,
        expose: "all", // its undeclared tools are offered, to callers holding email.read
        default_scopes: ["email.read"],
      },
    ],
  });
});
afterAll(async () => {
  await Promise.allSettled(clients.map((c) => c.close()));
  await server?.close();
  await crm?.stop();
  await idp?.close();
});

const token = (sub: string, scope: string, resource = `${GATEWAY}/mcp`) =>
  idp.getToken({ resource, scope, claims: { sub, tenant: "acme" } });

async function connect(
  bearer: string,
  name = "support-bot",
): Promise<{ client: Client; transport: StreamableHTTPClientTransport }> {
  const client = new Client({ name, version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(`${server.url}/mcp`), {
    requestInit: { headers: { authorization: `Bearer ${bearer}` } },
  });
  await client.connect(transport);
  clients.push(client);
  return { client, transport };
}

/** A `tools/call` as raw HTTP on a session, for what the official client does not show (status, headers). */
function rawToolCall(
  bearer: string,
  sessionId: string,
  id: number,
  name: string,
  args: Record<string, unknown>,
): Promise<Response> {
  return fetch(`${server.url}/mcp`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${bearer}`,
      "mcp-session-id": sessionId,
      "mcp-protocol-version": "2025-06-18",
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
    },
    body: JSON.stringify({ jsonrpc: "2.0", id, method: "tools/call", params: { name, arguments: args } }),
  });
}

const text = (r: unknown) => ((r as CallToolResult).content[0] as { text: string }).text;

describe("MCP gateway", () => {
  it("shows each user only the tools they could call", async () => {
    const names = async (bearer: string) =>
      (await (await connect(bearer)).client.listTools()).tools.map((t) => t.name).sort();
    expect(await names(await token("alice", "customers:read email.read"))).toEqual([
      "crm.get_customer",
      "crm.huge",
      "crm.whoami",
      "mail.crash",
      "mail.read_email",
      "mail.slow",
    ]);
    expect(await names(await token("bob", "customers:read"))).toEqual([
      "crm.get_customer",
      "crm.huge",
      "crm.whoami",
    ]);
    expect(await names(await token("carol", "orders:write"))).toEqual([
      "crm.huge",
      "crm.list_orders",
      "crm.whoami",
    ]);
    const listed = (
      await (await connect(await token("alice", "customers:read"))).client.listTools()
    ).tools.find((t) => t.name === "crm.get_customer");
    expect(listed?.inputSchema.properties).toHaveProperty("id");
  });

  it("calls the upstream with an on-behalf-of token naming the human and the agent, never the user's token, and redacts", async () => {
    const aliceToken = await token("alice", "customers:read email.read");
    const { client } = await connect(aliceToken, "support-bot");
    const before = crm.authorizations.length;
    const r = await client.callTool({ name: "crm.get_customer", arguments: { id: "c-7" } });
    expect(r.isError).toBeFalsy();
    expect(JSON.parse(text(r))).toEqual({
      id: "c-7",
      name: "Ada",
      ssn: "[REDACTED]",
      cards: [{ number: "[REDACTED]", brand: "visa" }],
    });
    const sent = crm.authorizations.slice(before);
    expect(sent.length).toBeGreaterThan(0);
    expect(sent.some((h) => h.includes(aliceToken))).toBe(false);
    const obo = sent[sent.length - 1]!.replace(/^Bearer /, "");
    const [h, p, s] = obo.split(".") as [string, string, string];
    const jwk = (await call(server.url, "GET", "/.well-known/jwks.json")).body.keys[0];
    expect(
      verify(
        null,
        Buffer.from(`${h}.${p}`),
        createPublicKey({ key: jwk, format: "jwk" }),
        Buffer.from(s, "base64url"),
      ),
    ).toBe(true);
    const claims = JSON.parse(Buffer.from(p, "base64url").toString());
    expect(claims).toMatchObject({
      iss: GATEWAY,
      aud: "https://crm.test",
      sub: "alice",
      tenant: "acme",
      act: { sub: "support-bot" },
    });
    expect(claims.exp - claims.iat).toBeLessThanOrEqual(300);
    // docs/mcp-gateway.md's backend verifier, run on the token the upstream received
    const verifyObo = oboVerifier(GATEWAY, `${server.url}/.well-known/jwks.json`, "https://crm.test");
    expect(await verifyObo(sent[sent.length - 1])).toEqual({
      user: "alice",
      tenant: "acme",
      scopes: ["customers:read", "email.read"],
      chain: ["support-bot"],
    });
    await expect(verifyObo(`Bearer ${aliceToken}`)).rejects.toThrow();
    expect(claims.scope.split(" ").sort()).toEqual(["customers:read", "email.read"]);
    await server.governor.flush();
    const records = (
      await call(server.url, "GET", "/v1/audit?user=alice&tool=crm.get_customer", { token: ADMIN })
    ).body.records;
    expect(records[0]).toMatchObject({
      source: "mcp",
      kind: "outcome",
      outcome: "ok",
      chain: ["support-bot"],
    });
  });

  it("answers a denied call with isError and the reason, and audits it", async () => {
    const { client } = await connect(await token("dave", "customers:read"));
    server.governor.patchTenantPolicy("acme", { users: { dave: { "*": { permission: "deny" } } } });
    try {
      const denied = await client.callTool({ name: "crm.whoami", arguments: {} });
      expect(denied.isError).toBe(true);
      expect(text(denied)).toMatch(/^denied \(permission_deny\)/);
    } finally {
      server.governor.patchTenantPolicy("acme", { users: { dave: null } });
    }
    await server.governor.flush();
    const records = (await call(server.url, "GET", "/v1/audit?user=dave&decision=deny", { token: ADMIN }))
      .body.records;
    expect(records[0]).toMatchObject({ tool: "crm.whoami", reason_code: "permission_deny", source: "mcp" });
  });

  it("answers a call refused for a missing scope with 403 insufficient_scope naming the scopes (MCP step-up), and audits it", async () => {
    const bobToken = await token("bob", "customers:read");
    const { client, transport } = await connect(bobToken);
    // The official client without an auth provider cannot step up: the call fails with the 403.
    await expect(
      client.callTool({ name: "mail.read_email", arguments: { mailbox: "a@acme.test" } }),
    ).rejects.toMatchObject({ code: 403, message: expect.stringMatching(/missing scope email\.read/) });
    const res = await rawToolCall(bobToken, transport.sessionId!, 41, "mail.read_email", {
      mailbox: "a@acme.test",
    });
    expect(res.status).toBe(403);
    expect(res.headers.get("www-authenticate")).toBe(
      `Bearer error="insufficient_scope", scope="customers:read email.read", error_description="this tool needs more scopes than the token grants", resource_metadata="${GATEWAY}/.well-known/oauth-protected-resource"`,
    );
    const body = (await res.json()) as { result: { content: { text: string }[] } };
    expect(body).toMatchObject({ jsonrpc: "2.0", id: 41, result: { isError: true } });
    expect(body.result.content[0]?.text).toMatch(/^denied \(missing_scope\): missing scope email\.read/);
    // the session goes on: an allowed call on it still answers 200
    expect((await client.callTool({ name: "crm.whoami", arguments: {} })).isError).toBeFalsy();
    await server.governor.flush();
    const records = (await call(server.url, "GET", "/v1/audit?user=bob&decision=deny", { token: ADMIN })).body
      .records;
    expect(records[0]).toMatchObject({
      tool: "mail.read_email",
      reason_code: "missing_scope",
      source: "mcp",
    });
  });

  it("neither lists nor runs an upstream tool nobody declared, and audits its first sight", async () => {
    const { client } = await connect(await token("alice", "customers:read email.read orders:write"));
    const listed = (await client.listTools()).tools.map((t) => t.name);
    expect(listed).not.toContain("crm.export_all_customers");
    const before = crm.authorizations.length;
    const r = await client.callTool({ name: "crm.export_all_customers", arguments: {} });
    expect(r.isError).toBe(true);
    expect(text(r)).toMatch(/^denied \(permission_deny\): unknown tool "crm\.export_all_customers"/);
    expect(crm.authorizations.slice(before).some((h) => h !== "")).toBe(false); // the upstream was never called
    const sightings = (
      await call(server.url, "GET", "/v1/audit?tool=crm.export_all_customers", { token: ADMIN })
    ).body.records;
    expect(sightings.map((x: { kind: string; decision: string }) => [x.kind, x.decision])).toEqual([
      ["attempt", "deny"],
      ["admin", "deny"],
    ]);
    expect(sightings[1].reason).toBe(
      "upstream crm lists crm.export_all_customers, not declared: hidden and refused until a tools entry declares it",
    );
    // Declaring it (live, through the admin API) is what offers it.
    const put = await call(server.url, "PUT", "/v1/admin/tools/crm.export_all_customers", {
      token: ADMIN,
      body: { required_scopes: ["orders:write"] },
    });
    expect(put.status).toBe(200);
    const exporter = (await connect(await token("alice", "customers:read orders:write"))).client;
    expect((await exporter.listTools()).tools.map((t) => t.name)).toContain("crm.export_all_customers");
  });

  it("refuses a tool name with control characters as invalid params, before anything is decided", async () => {
    const { client } = await connect(await token("alice", "customers:read"));
    await expect(client.callTool({ name: "crm.get\u0000customer", arguments: {} })).rejects.toThrow(
      /tool name must not contain control characters/,
    );
    const after = await client.callTool({ name: "crm.get_customer", arguments: { id: "c-1" } });
    expect(after.isError).toBeFalsy();
  });

  it("holds a call the policy answers with ask until an approver decides, then runs or refuses it", async () => {
    const { client } = await connect(await token("alice", "customers:read"));
    const decide = async (id: string, decision: "approve" | "deny") => {
      let approval: { id: string; args: { id: string } } | undefined;
      for (let i = 0; i < 100 && approval === undefined; i++) {
        const pending = await call(server.url, "GET", "/v1/approvals?status=pending", { token: ADMIN });
        approval = pending.body.approvals.find((a: { args: { id: string } }) => a.args.id === id);
        if (approval === undefined) await new Promise((r) => setTimeout(r, 30));
      }
      expect(approval).toBeDefined();
      const res = await call(server.url, "POST", `/v1/approvals/${approval!.id}`, {
        token: ADMIN,
        body: { decision, note: "checked" },
      });
      expect(res.status).toBe(200);
      return approval!.id;
    };
    // approved while the call waits: the upstream runs and the output is redacted as usual
    const held = client.callTool({ name: "crm.get_customer", arguments: { id: "vip-1" } });
    await decide("vip-1", "approve");
    const r = await held;
    expect(r.isError).toBeFalsy();
    expect(JSON.parse(text(r))).toMatchObject({ id: "vip-1", ssn: "[REDACTED]" });
    // denied: the model reads why, the upstream is never called
    const before = crm.authorizations.length;
    const refused = client.callTool({ name: "crm.get_customer", arguments: { id: "vip-2" } });
    await decide("vip-2", "deny");
    expect(text(await refused)).toMatch(/^denied \(approval_denied\): denied by admin: checked/);
    expect(crm.authorizations.length).toBe(before);
    // nobody decides in time: an error names the approval; the same call again waits on that approval
    const first = await client.callTool({ name: "crm.get_customer", arguments: { id: "vip-3" } });
    expect(first.isError).toBe(true);
    expect(text(first)).toMatch(/waiting for approval apr_\S+ \(VIP records need a manager\)/);
    const approvalId = await decide("vip-3", "approve");
    expect(text(first)).toContain(approvalId);
    const again = await client.callTool({ name: "crm.get_customer", arguments: { id: "vip-3" } });
    expect(again.isError).toBeFalsy();
    await server.governor.flush();
    const records = (
      await call(server.url, "GET", "/v1/audit?user=alice&tool=crm.get_customer", { token: ADMIN })
    ).body.records as { kind: string; decision: string; outcome: string; args: { id: string } }[];
    const vip1 = records.filter((x) => x.args?.id === "vip-1").map((x) => [x.kind, x.decision, x.outcome]);
    expect(vip1).toEqual(
      expect.arrayContaining([
        ["attempt", "ask", "pending"],
        ["approval", "allow", "pending"],
        ["attempt", "allow", "pending"],
        ["outcome", "allow", "ok"],
      ]),
    );
    // approved, then revoked before the held call goes ahead: the policy in force wins, the upstream is not called
    const revoke = (permission: "deny" | null) =>
      call(server.url, "PATCH", "/v1/admin/tenants/acme/policy", {
        token: ADMIN,
        body: { users: { alice: permission === null ? null : { "*": { permission } } } },
      });
    const late = await client.callTool({ name: "crm.get_customer", arguments: { id: "vip-4" } });
    expect(text(late)).toMatch(/waiting for approval/);
    await decide("vip-4", "approve");
    try {
      await revoke("deny");
      const calls = crm.authorizations.length;
      const revoked = await client.callTool({ name: "crm.get_customer", arguments: { id: "vip-4" } });
      expect(text(revoked)).toMatch(/^denied \(permission_deny\)/);
      expect(crm.authorizations.length).toBe(calls);
    } finally {
      await revoke(null);
    }
  }, 20_000);

  it("binds a session to its user: another user's token on it is refused", async () => {
    const { transport } = await connect(await token("alice", "customers:read"));
    const sessionId = transport.sessionId!;
    const mallory = await token("mallory", "customers:read");
    const res = await rawToolCall(mallory, sessionId, 9, "crm.get_customer", { id: "c-1" });
    expect(res.status).toBe(403);
  });

  it("asks for a token issued for this gateway, with resource metadata", async () => {
    const none = await fetch(`${server.url}/mcp`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    expect(none.status).toBe(401);
    expect(none.headers.get("www-authenticate")).toBe(
      `Bearer resource_metadata="${GATEWAY}/.well-known/oauth-protected-resource"`,
    );
    const bad = await fetch(`${server.url}/mcp`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer not-a-jwt" },
      body: "{}",
    });
    expect(bad.status).toBe(401);
    expect(bad.headers.get("www-authenticate")).toMatch(
      new RegExp(
        `^Bearer error="invalid_token", error_description="[^"]+", resource_metadata="${GATEWAY}/\\.well-known/oauth-protected-resource"$`,
      ),
    );
    const wrongAudience = await fetch(`${server.url}/mcp`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        authorization: `Bearer ${await token("alice", "customers:read", DEFAULT_RESOURCE)}`,
      },
      body: "{}",
    });
    expect(wrongAudience.status).toBe(401);
    expect(wrongAudience.headers.get("www-authenticate")).toMatch(
      /^Bearer error="invalid_token", .*RFC 8707/,
    );
    const otherAudience = await token("alice", "customers:read", DEFAULT_RESOURCE);
    await expect(connect(otherAudience)).rejects.toThrow();
    const meta = (await call(server.url, "GET", "/.well-known/oauth-protected-resource")).body;
    expect(meta).toMatchObject({
      resource: `${GATEWAY}/mcp`,
      // the users' IdP, and onbehalf, which issues delegation tokens (its RFC 8414 metadata is at its issuer)
      authorization_servers: [idp.issuer, GATEWAY],
      bearer_methods_supported: ["header"],
    });
    expect(meta.scopes_supported).toEqual(["customers:read", "email.read", "orders:write"]);
  });

  it("turns a slow, crashed or unreachable upstream into a clear tool error, and restarts a stdio upstream", async () => {
    const { client } = await connect(await token("alice", "customers:read email.read"));
    const t0 = Date.now();
    const slow = await client.callTool({ name: "mail.slow", arguments: {} });
    expect(slow.isError).toBe(true);
    expect(text(slow)).toMatch(/upstream mail did not answer within 1500 ms/);
    expect(Date.now() - t0).toBeLessThan(5_000);
    const first = JSON.parse(
      text(await client.callTool({ name: "mail.read_email", arguments: { mailbox: "a" } })),
    );
    const crashed = await client.callTool({ name: "mail.crash", arguments: {} });
    expect(crashed.isError).toBe(true);
    const again = await client.callTool({ name: "mail.read_email", arguments: { mailbox: "a" } });
    expect(again.isError).toBeFalsy();
    expect(JSON.parse(text(again)).pid).not.toBe(first.pid); // a new process
    await crm.stop();
    const down = await client.callTool({ name: "crm.get_customer", arguments: { id: "c-1" } });
    expect(down.isError).toBe(true);
    expect(text(down)).toMatch(/^upstream crm/);
    await crm.start();
    await server.governor.flush();
    const errors = (
      await call(server.url, "GET", "/v1/audit?user=alice&limit=200", { token: ADMIN })
    ).body.records.filter(
      (r: { kind: string; outcome: string }) => r.kind === "outcome" && r.outcome === "error",
    );
    expect(errors.length).toBeGreaterThanOrEqual(3);
  });

  it("cuts an oversized result with a note", async () => {
    const { client } = await connect(await token("alice", "customers:read"));
    const r = (await client.callTool({ name: "crm.huge", arguments: {} })) as CallToolResult;
    expect(Buffer.byteLength((r.content[0] as { text: string }).text)).toBe(1_048_576);
    expect((r.content[1] as { text: string }).text).toMatch(/^\[onbehalf: result cut, \d+ bytes over/);
  });

  it("governs a delegated chain under every tier it names, and records a session under one trace", async () => {
    const carol = await token("carol", "orders:write customers:read");
    const hop = async (subject: string, actor: string, tier: string) =>
      (
        await call(server.url, "POST", "/v1/token", {
          body: {
            grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
            subject_token: subject,
            subject_token_type: "urn:ietf:params:oauth:token-type:access_token",
            actor,
            tier,
          },
        })
      ).body.access_token as string;
    const helper = await hop(await hop(carol, "nightly", "background"), "helper", "interactive");
    server.governor.patchTenantPolicy("acme", {
      tools: { "crm.list_orders": { background: { permission: "deny" } } },
    });
    try {
      const { client } = await connect(helper);
      const listed = (await client.listTools()).tools.map((t) => t.name);
      expect(listed).toContain("crm.get_customer");
      expect(listed).not.toContain("crm.list_orders"); // the background hop before it denies it
      const refused = await client.callTool({ name: "crm.list_orders", arguments: {} });
      expect(refused.isError).toBe(true);
      await client.callTool({ name: "crm.get_customer", arguments: { id: "c-1" } });
      await server.governor.flush();
      const mine = (
        await call(server.url, "GET", "/v1/audit?user=carol&agent=helper&limit=50", { token: ADMIN })
      ).body.records as { trace_id: string; tool: string; decision: string; chain: string[] }[];
      expect(mine.map((r) => `${r.tool}:${r.decision}`)).toEqual(
        expect.arrayContaining(["crm.list_orders:deny", "crm.get_customer:allow"]),
      );
      expect(new Set(mine.map((r) => r.trace_id)).size).toBe(1);
      expect(mine[0]!.trace_id).toMatch(/^[0-9a-f]{32}$/);
      expect(mine[0]!.chain).toEqual(["nightly", "helper"]);
    } finally {
      server.governor.patchTenantPolicy("acme", { tools: null });
    }
  });

  it("limits a delegated session to the task capabilities its token carries: listing and calls", async () => {
    const dave = await token("dave", "customers:read orders:write");
    const r = await call(server.url, "POST", "/v1/token", {
      body: {
        grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
        subject_token: dave,
        subject_token_type: "urn:ietf:params:oauth:token-type:access_token",
        actor: "lookup-bot",
        authorization_details: [
          {
            type: "urn:onbehalf:capabilities",
            tools: [{ tool: "crm.get_customer", when: "args.id in task.customers" }],
            data: { customers: ["c-1"] },
          },
        ],
      },
    });
    expect(r.status).toBe(200);
    const { client } = await connect(r.body.access_token as string);
    expect((await client.listTools()).tools.map((t) => t.name)).toEqual(["crm.get_customer"]);
    expect(
      (await client.callTool({ name: "crm.get_customer", arguments: { id: "c-1" } })).isError,
    ).toBeFalsy();
    const other = await client.callTool({ name: "crm.get_customer", arguments: { id: "c-2" } });
    expect(other.isError).toBe(true);
    expect(text(other)).toMatch(/^denied \(capability_deny\)/);
    const unlisted = await client.callTool({ name: "crm.whoami", arguments: {} });
    expect(text(unlisted)).toMatch(/^denied \(capability_deny\)/);
    await server.governor.flush();
    const records = (
      await call(server.url, "GET", "/v1/audit?user=dave&agent=lookup-bot&decision=deny&limit=10", {
        token: ADMIN,
      })
    ).body.records as { capabilities?: string; source: string }[];
    expect(records.length).toBeGreaterThanOrEqual(2);
    for (const rec of records)
      expect(rec).toMatchObject({ source: "mcp", capabilities: expect.stringMatching(/^sha256:/) });
  });
});
