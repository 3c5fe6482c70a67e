/**
 * Resources and prompts through the MCP gateway, governed like tools: the official MCP client in front of a
 * real upstream (the SDK's McpServer) that offers resources, a template and prompts, with tokens from a real
 * oidc-provider.
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  PromptListChangedNotificationSchema,
  ResourceListChangedNotificationSchema,
  ResourceUpdatedNotificationSchema,
  ToolListChangedNotificationSchema,
} from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { OnbehalfServer } from "../../src/server/app.js";
import { type ResourceUpstream, startResourceUpstream } from "../support/mcp-resource-upstream.js";
import { DEFAULT_RESOURCE, type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { ADMIN, call, serverConfig, startTestServer } from "../support/server.js";

const GATEWAY = "https://gateway.onbehalf.test";
let idp: OidcProviderHandle;
let crm: ResourceUpstream;
let kb: ResourceUpstream;
let server: OnbehalfServer;
const clients: Client[] = [];

beforeAll(async () => {
  idp = await startOidcProvider();
  crm = await startResourceUpstream();
  kb = await startResourceUpstream("kb");
  const base = serverConfig(idp);
  server = await startTestServer(idp, {
    server: { ...base.server, public_url: GATEWAY },
    issuers: [{ issuer: idp.issuer, audience: [DEFAULT_RESOURCE, `${GATEWAY}/mcp`], preset: "generic" }],
    tools: [],
    resources: [
      { uri: "crm://customers/*", required_scopes: ["customers:read"], redact: ["ssn"] },
      { uri: "crm://orders/*", required_scopes: ["orders:write"] },
    ],
    prompts: [
      { name: "crm.summarize", required_scopes: ["customers:read"], redact: ["ssn"] },
      { name: "crm.draft_order", required_scopes: ["orders:write"] },
    ],
    tenants: [
      {
        id: "acme",
        policy: {
          defaults: { "*": { permission: "allow", post_transform: "redact" } },
          // the name every undeclared resource of kb (expose: all) is decided under
          tools: {
            "resource:kb": { "*": { rate_limit_per_minute: 1000 } },
            "prompt:crm.draft_order": { "*": { post_transform: "block" } },
          },
          rules: [
            {
              id: "no-vip-summaries",
              tools: ["prompt:crm.summarize"],
              when: "args.arguments.customer.startsWith('vip-')",
              effect: "deny",
              reason: "VIP customers are summarized by people",
            },
          ],
        },
      },
    ],
    upstreams: [
      { name: "crm", transport: "streamable-http", url: crm.url, timeout_ms: 2_000 },
      // everything it lists is offered, undeclared items requiring email.read
      {
        name: "kb",
        transport: "streamable-http",
        url: kb.url,
        timeout_ms: 2_000,
        expose: "all",
        default_scopes: ["email.read"],
      },
    ],
  });
});
afterAll(async () => {
  await Promise.allSettled(clients.map((c) => c.close()));
  await server?.close();
  await crm?.stop();
  await kb?.stop();
  await idp?.close();
});

async function connect(sub: string, scope: string): Promise<Client> {
  const bearer = await idp.getToken({ resource: `${GATEWAY}/mcp`, scope, claims: { sub, tenant: "acme" } });
  const client = new Client({ name: "support-bot", version: "1.0.0" });
  await client.connect(
    new StreamableHTTPClientTransport(new URL(`${server.url}/mcp`), {
      requestInit: { headers: { authorization: `Bearer ${bearer}` } },
    }),
  );
  clients.push(client);
  return client;
}

async function audit(query: string) {
  await server.governor.flush();
  return (await call(server.url, "GET", `/v1/audit?${query}`, { token: ADMIN })).body.records as Record<
    string,
    unknown
  >[];
}

const textOf = (contents: unknown[]) => (contents[0] as { text: string }).text;

describe("MCP gateway: resources", () => {
  it("advertises resources and prompts, and lists to each user only what they may read", async () => {
    const alice = await connect("alice", "customers:read");
    const carol = await connect("carol", "orders:write");
    expect(alice.getServerCapabilities()).toMatchObject({ resources: {}, prompts: {}, tools: {} });
    const uris = async (c: Client) => (await c.listResources()).resources.map((r) => r.uri).sort();
    // crm://secret/keys is listed by the upstream but declared by no resources: entry (expose: declared)
    expect(await uris(alice)).toEqual(["crm://customers/42", "crm://customers/7", "crm://customers/photo"]);
    expect(await uris(carol)).toEqual(["crm://orders/1"]);
    const templates = async (c: Client) =>
      (await c.listResourceTemplates()).resourceTemplates.map((t) => t.uriTemplate);
    expect(await templates(alice)).toEqual([]);
    expect(await templates(carol)).toEqual(["crm://orders/{id}"]);
  });

  it("redacts a resource's JSON contents with its redact paths, and audits the read", async () => {
    const alice = await connect("alice", "customers:read");
    const read = await alice.readResource({ uri: "crm://customers/42" });
    const customer = JSON.parse(textOf(read.contents));
    expect(customer.name).toBe("Ada");
    expect(customer.ssn).not.toBe("078-05-1120");
    expect(JSON.stringify(read)).not.toContain("078-05-1120");
    const records = await audit(`user=alice&tool=${encodeURIComponent("resource:crm://customers/*")}`);
    expect(records[0]).toMatchObject({ source: "mcp", decision: "allow", outcome: "ok" });
  });

  it("withholds binary contents that redaction paths cannot reach (fails closed)", async () => {
    const alice = await connect("alice", "customers:read");
    const read = await alice.readResource({ uri: "crm://customers/photo" });
    expect(read.contents[0]).not.toHaveProperty("blob");
    expect(textOf(read.contents)).toMatch(/^\[withheld by onbehalf: a binary resource \(image\/png\)/);
  });

  it("refuses a read for a missing scope with 403 insufficient_scope (MCP step-up), and audits it with source mcp", async () => {
    const carol = await connect("carol", "orders:write");
    const before = crm.reads.length;
    // The official client without an auth provider cannot step up: the read fails with the 403.
    await expect(carol.readResource({ uri: "crm://customers/42" })).rejects.toMatchObject({ code: 403 });
    // On the wire: the challenge names the scopes to ask for; the body is still the JSON-RPC refusal.
    const bearer = await idp.getToken({
      resource: `${GATEWAY}/mcp`,
      scope: "orders:write",
      claims: { sub: "carol", tenant: "acme" },
    });
    const res = await fetch(`${server.url}/mcp`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${bearer}`,
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        "mcp-protocol-version": "2025-06-18",
        "mcp-session-id": (carol.transport as StreamableHTTPClientTransport).sessionId as string,
      },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 7,
        method: "resources/read",
        params: { uri: "crm://customers/7" },
      }),
    });
    expect(res.status).toBe(403);
    expect(res.headers.get("www-authenticate")).toBe(
      `Bearer error="insufficient_scope", scope="customers:read orders:write", error_description="this resource needs more scopes than the token grants", resource_metadata="${GATEWAY}/.well-known/oauth-protected-resource"`,
    );
    expect(await res.json()).toMatchObject({
      id: 7,
      error: { message: expect.stringMatching(/denied \(missing_scope\): missing scope customers:read/) },
    });
    expect(crm.reads.length).toBe(before);
    const records = await audit("user=carol&decision=deny");
    expect(records[0]).toMatchObject({
      tool: "resource:crm://customers/*",
      reason_code: "missing_scope",
      source: "mcp",
    });
  });

  it("neither lists nor reads a resource no entry declares (expose: declared), and audits the attempt", async () => {
    const alice = await connect("alice", "customers:read orders:write");
    await expect(alice.readResource({ uri: "crm://secret/keys" })).rejects.toThrow(
      /denied \(permission_deny\)/,
    );
    expect(crm.reads).not.toContain("crm://secret/keys");
    const records = await audit(`tool=${encodeURIComponent("resource:crm://secret/keys")}`);
    expect(records[0]).toMatchObject({ user: "alice", decision: "deny", source: "mcp" });
    // its first sight told the operators it is hidden
    expect(records.find((r) => r["kind"] === "admin")?.["reason"]).toBe(
      "upstream crm lists resource crm://secret/keys, not declared: hidden and refused until a resources entry declares it",
    );
  });

  it("reads through a template the upstream listed, and refuses a URI no upstream listed (no routing by guess)", async () => {
    const carol = await connect("carol", "orders:write");
    const order = await carol.readResource({ uri: "crm://orders/9" });
    expect(JSON.parse(textOf(order.contents))).toEqual({ order: "9" });
    const alice = await connect("alice", "customers:read");
    // declared (crm://customers/*) and permitted, but no upstream lists it or a template of it
    await expect(alice.readResource({ uri: "crm://customers/99" })).rejects.toThrow(/resource not found/);
    expect(crm.reads).not.toContain("crm://customers/99");
    const records = await audit(
      `user=alice&tool=${encodeURIComponent("resource:crm://customers/*")}&limit=50`,
    );
    expect(records.some((r) => r["outcome"] === "error")).toBe(true);
  });
});

describe("MCP gateway: expose: all", () => {
  it("offers an upstream's undeclared resources and prompts with its default scopes, decided as resource:<upstream>", async () => {
    const dan = await connect("dan", "email.read");
    expect((await dan.listResources()).resources.map((r) => r.uri).sort()).toEqual([
      "kb://customers/42",
      "kb://customers/7",
      "kb://customers/photo",
      "kb://orders/1",
      "kb://reports/huge",
      "kb://secret/keys",
    ]);
    expect((await dan.listPrompts()).prompts.map((p) => p.name).sort()).toEqual([
      "kb.draft_order",
      "kb.internal",
      "kb.summarize",
    ]);
    const read = await dan.readResource({ uri: "kb://customers/7" });
    expect(JSON.parse(textOf(read.contents))).toMatchObject({ id: "7", ssn: "078-05-1120" }); // no redact paths
    const records = await audit("user=dan&tool=resource%3Akb");
    expect(records[0]).toMatchObject({ decision: "allow", outcome: "ok", source: "mcp" });
    // contents past the size limit are dropped whole, with a note
    const huge = await dan.readResource({ uri: "kb://reports/huge" });
    expect(huge.contents.map((c) => (c as { text: string }).text)).toEqual([
      "summary",
      "[onbehalf: contents cut, 1200000 bytes over the 1048576-byte limit]",
    ]);
    const alice = await connect("alice", "customers:read");
    expect((await alice.listResources()).resources.some((r) => r.uri.startsWith("kb://"))).toBe(false);
    await expect(alice.readResource({ uri: "kb://customers/7" })).rejects.toThrow(/denied \(missing_scope\)/);
  });
});

describe("MCP gateway: prompts", () => {
  it("lists each user only the prompts they may get, under the upstream's prefix", async () => {
    const names = async (c: Client) => (await c.listPrompts()).prompts.map((p) => p.name).sort();
    expect(await names(await connect("alice", "customers:read"))).toEqual(["crm.summarize"]);
    expect(await names(await connect("carol", "orders:write"))).toEqual(["crm.draft_order"]);
    // crm.internal is not declared: hidden from everyone
    expect(await names(await connect("erin", "customers:read orders:write"))).toEqual([
      "crm.draft_order",
      "crm.summarize",
    ]);
  });

  it("decides a get with its arguments visible to rules, redacts its messages, and audits it", async () => {
    const alice = await connect("alice", "customers:read");
    const got = await alice.getPrompt({ name: "crm.summarize", arguments: { customer: "c-1" } });
    const message = JSON.parse((got.messages[0]?.content as { text: string } | undefined)?.text ?? "null");
    expect(message).toMatchObject({ task: "summarize", customer: "c-1" });
    expect(message.ssn).not.toBe("078-05-1120");
    await expect(
      alice.getPrompt({ name: "crm.summarize", arguments: { customer: "vip-9" } }),
    ).rejects.toThrow(/denied \(rule_deny\): VIP customers/);
    const records = await audit(
      `user=alice&tool=${encodeURIComponent("prompt:crm.summarize")}&decision=deny`,
    );
    expect(records[0]).toMatchObject({ rule: "no-vip-summaries", source: "mcp" });
  });

  it("withholds a prompt whose output the policy blocks, and audits it", async () => {
    const carol = await connect("carol", "orders:write");
    await expect(carol.getPrompt({ name: "crm.draft_order" })).rejects.toThrow(/withheld by policy/);
    const records = await audit(`user=carol&tool=${encodeURIComponent("prompt:crm.draft_order")}`);
    expect(records[0]).toMatchObject({ outcome: "blocked", source: "mcp" });
  });

  it("refuses an undeclared prompt", async () => {
    const erin = await connect("erin", "customers:read orders:write");
    await expect(erin.getPrompt({ name: "crm.internal" })).rejects.toThrow(/denied \(permission_deny\)/);
  });
});

describe("MCP gateway: completion", () => {
  it("passes completion through for a prompt or template the user may see, and refuses it otherwise", async () => {
    const alice = await connect("alice", "customers:read");
    const carol = await connect("carol", "orders:write");
    expect(alice.getServerCapabilities()?.completions).toBeDefined();
    const prompt = { type: "ref/prompt" as const, name: "crm.summarize" };
    const argument = { name: "customer", value: "c-" };
    expect((await alice.complete({ ref: prompt, argument })).completion.values).toEqual(["c-1", "c-2"]);
    await expect(carol.complete({ ref: prompt, argument })).rejects.toThrow(
      /not offered to you|offered to you/,
    );
    const template = { type: "ref/resource" as const, uri: "crm://orders/{id}" };
    const id = { name: "id", value: "1" };
    expect((await carol.complete({ ref: template, argument: id })).completion.values).toEqual(["10", "11"]);
    await expect(alice.complete({ ref: template, argument: id })).rejects.toThrow(/offered to you/);
  });
});

describe("MCP gateway: lists follow the policy", () => {
  it("tells each session to list tools, resources and prompts again when the policy changes", async () => {
    const dana = await connect("dana", "customers:read");
    const told: string[] = [];
    for (const [schema, kind] of [
      [ToolListChangedNotificationSchema, "tools"],
      [ResourceListChangedNotificationSchema, "resources"],
      [PromptListChangedNotificationSchema, "prompts"],
    ] as const) {
      dana.setNotificationHandler(schema, async () => void told.push(kind));
    }
    const before = (await dana.listResources()).resources.map((r) => r.uri);
    expect(before).toContain("crm://customers/42");
    server.governor.patchTenantPolicy("acme", { users: { dana: { "*": { permission: "deny" } } } });
    try {
      await expect.poll(() => [...told].sort()).toEqual(["prompts", "resources", "tools"]);
      // what the list now says is the new policy's
      expect((await dana.listResources()).resources).toEqual([]);
    } finally {
      server.governor.patchTenantPolicy("acme", { users: { dana: null } });
    }
  });
});

describe("MCP gateway: subscriptions", () => {
  it("relays an update only to the sessions subscribed whose user may read it, and ends with the session or the permission", async () => {
    const updates = (client: Client) => {
      const seen: string[] = [];
      client.setNotificationHandler(ResourceUpdatedNotificationSchema, async (n) => {
        seen.push(n.params.uri);
      });
      return seen;
    };
    const alice = await connect("alice", "customers:read");
    const bob = await connect("bob", "customers:read");
    const carol = await connect("carol", "orders:write");
    expect(alice.getServerCapabilities()?.resources?.subscribe).toBe(true);
    const [aliceSaw, bobSaw, carolSaw] = [updates(alice), updates(bob), updates(carol)];
    const uri = "crm://customers/42";
    await alice.subscribeResource({ uri });
    await bob.subscribeResource({ uri });
    await expect(carol.subscribeResource({ uri })).rejects.toThrow(/offered to you/);
    expect(crm.subscriptions.filter((s) => s === `subscribe ${uri}`)).toHaveLength(1); // once upstream
    await crm.touch(uri);
    await expect.poll(() => aliceSaw).toEqual([uri]);
    await expect.poll(() => bobSaw).toEqual([uri]);
    // bob's permission is revoked: his subscription ends at the next update
    server.governor.patchTenantPolicy("acme", { users: { bob: { "*": { permission: "deny" } } } });
    try {
      await crm.touch(uri);
      await expect.poll(() => aliceSaw).toEqual([uri, uri]);
      expect(bobSaw).toEqual([uri]);
    } finally {
      server.governor.patchTenantPolicy("acme", { users: { bob: null } });
    }
    expect(carolSaw).toEqual([]);
    // alice's session ends: the last subscription to the URI ends upstream
    await (alice.transport as StreamableHTTPClientTransport).terminateSession();
    await expect.poll(() => crm.subscriptions.at(-1)).toBe(`unsubscribe ${uri}`);

    // Each subscription's start, refusal and end is on record as its user's, with why it ended.
    const said = async () =>
      (await audit("limit=1000"))
        .filter((r) => r["kind"] === "admin" && (r["args"] as { uri?: string } | null)?.uri === uri)
        .map((r) => `${r["user"]} ${r["decision"]} ${r["tool"]}: ${r["reason"]}`);
    await expect
      .poll(said)
      .toEqual(
        expect.arrayContaining([
          `alice allow resource:crm://customers/*: alice subscribed to ${uri}`,
          `bob allow resource:crm://customers/*: bob subscribed to ${uri}`,
          `carol deny resource:${uri}: carol may not subscribe to ${uri}: it is not offered to them`,
          `bob allow resource:crm://customers/*: bob's subscription to ${uri} ended: they may no longer read it`,
          `alice allow resource:crm://customers/*: alice's subscription to ${uri} ended: their session ended`,
        ]),
      );
  });

  it("subscribes again upstream when the upstream restarts", async () => {
    const alice = await connect("alice", "customers:read");
    const seen: string[] = [];
    alice.setNotificationHandler(ResourceUpdatedNotificationSchema, async (n) => {
      seen.push(n.params.uri);
    });
    const uri = "crm://customers/7";
    await alice.subscribeResource({ uri });
    await crm.restart();
    // the first read after the restart finds the upstream session gone; the gateway opens a new one
    await alice.readResource({ uri }).catch(() => {});
    await alice.readResource({ uri });
    await expect.poll(() => crm.subscriptions.filter((s) => s === `subscribe ${uri}`).length).toBe(2);
    await crm.touch(uri);
    await expect.poll(() => seen).toEqual([uri]);
  });
});
