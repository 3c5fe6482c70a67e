/**
 * What an upstream sends back while a call runs (progress, log messages, sampling and elicitation requests) and
 * cancellation, through the MCP gateway: two users in two sessions of the official MCP client, in front of a
 * real upstream on the official SDK's McpServer, with tokens from a real oidc-provider.
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  type CallToolResult,
  type ClientCapabilities,
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  LoggingMessageNotificationSchema,
  type Progress,
  ProgressNotificationSchema,
} from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { OnbehalfServer } from "../../src/server/app.js";
import { pingSession, type RelayUpstream, startRelayUpstream } from "../support/mcp-relay-upstream.js";
import { DEFAULT_RESOURCE, type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { ADMIN, call, serverConfig, startTestServer } from "../support/server.js";

const GATEWAY = "https://gateway.onbehalf.test";
let idp: OidcProviderHandle;
let upstream: RelayUpstream;
let server: OnbehalfServer;
const clients: Client[] = [];

beforeAll(async () => {
  idp = await startOidcProvider();
  upstream = await startRelayUpstream();
  const base = serverConfig(idp);
  server = await startTestServer(idp, {
    server: { ...base.server, public_url: GATEWAY },
    issuers: [{ issuer: idp.issuer, audience: [DEFAULT_RESOURCE, `${GATEWAY}/mcp`], preset: "generic" }],
    tools: [
      { name: "relay.converse" },
      { name: "relay.wait" },
      { name: "relay.stray" },
      { name: "relay.withdraw" },
      { name: "pipe.converse" },
    ],
    tenants: [
      {
        id: "acme",
        policy: {
          defaults: { "*": { permission: "allow" } },
          rules: [
            {
              id: "secret-calls",
              tools: ["relay.converse"],
              when: "args.tag.startsWith('secret')",
              effect: "redact",
              redact: ["ssn"],
              reason: "secret calls are redacted",
            },
          ],
        },
      },
    ],
    upstreams: [
      {
        name: "relay",
        transport: "streamable-http",
        url: upstream.url,
        timeout_ms: 10_000,
        auth: { type: "obo", audience: "https://relay.test" },
      },
      {
        name: "pipe",
        transport: "stdio",
        command: process.execPath,
        args: ["--import", "tsx", "test/fixtures/stdio-relay-upstream.ts"],
        timeout_ms: 10_000,
      },
    ],
  });
});
afterAll(async () => {
  await Promise.allSettled(clients.map((c) => c.close()));
  await server?.close();
  await upstream?.stop();
  await idp?.close();
});

/** One user's session, with what reached it. */
interface UserSession {
  readonly client: Client;
  readonly logs: string[];
  readonly sampled: string[];
  readonly elicited: string[];
  /** Sampling requests the upstream cancelled while the client held them. */
  readonly withdrawn: string[];
}

async function session(
  user: string,
  capabilities: ClientCapabilities = { sampling: {}, elicitation: {} },
): Promise<UserSession> {
  const bearer = await idp.getToken({
    resource: `${GATEWAY}/mcp`,
    scope: "openid",
    claims: { sub: user, tenant: "acme" },
  });
  const client = new Client({ name: `${user}-agent`, version: "1.0.0" }, { capabilities });
  const s: UserSession = { client, logs: [], sampled: [], elicited: [], withdrawn: [] };
  client.setNotificationHandler(LoggingMessageNotificationSchema, async (n) => {
    s.logs.push(String(n.params.data));
  });
  if (capabilities.sampling !== undefined) {
    client.setRequestHandler(CreateMessageRequestSchema, async (req, extra) => {
      const asked = (req.params.messages[0]?.content as { text?: string } | undefined)?.text ?? "";
      s.sampled.push(asked);
      if (asked === "hang") {
        await new Promise((resolve) => extra.signal.addEventListener("abort", resolve));
        s.withdrawn.push(asked);
      }
      return {
        model: `${user}-model`,
        role: "assistant",
        content: { type: "text", text: `${user} on ${asked}` },
      };
    });
  }
  if (capabilities.elicitation !== undefined) {
    client.setRequestHandler(ElicitRequestSchema, async (req) => {
      s.elicited.push(req.params.message);
      return { action: "accept", content: { name: user } };
    });
  }
  await client.connect(
    new StreamableHTTPClientTransport(new URL(`${server.url}/mcp`), {
      requestInit: { headers: { authorization: `Bearer ${bearer}` } },
    }),
  );
  clients.push(client);
  return s;
}

const text = (r: unknown) => ((r as CallToolResult).content[0] as { text: string }).text;

/** A `converse` call with a progress token; resolves to its result and the progress it was told of. */
async function converse(s: UserSession, tag: string, meet = false) {
  const progress: Progress[] = [];
  const result = await s.client.callTool({ name: "relay.converse", arguments: { tag, meet } }, undefined, {
    onprogress: (p) => progress.push(p),
  });
  return { text: text(result), progress: progress.map((p) => p.message) };
}

describe("MCP gateway relay", () => {
  it("relays each user's progress, logs, sampling and elicitation to their own session only, with calls running at once", async () => {
    const alice = await session("alice");
    const bob = await session("bob");
    upstream.meet(2); // neither call goes on until both are running at the upstream
    const [a, b] = await Promise.all([converse(alice, "alice-call", true), converse(bob, "bob-call", true)]);

    expect(a.text).toBe('sampled alice-model: alice on alice-call\nelicited accept: {"name":"alice"}');
    expect(b.text).toBe('sampled bob-model: bob on bob-call\nelicited accept: {"name":"bob"}');
    expect(a.progress).toEqual(["alice-call half", "alice-call done"]);
    expect(b.progress).toEqual(["bob-call half", "bob-call done"]);
    expect(alice.sampled).toEqual(["alice-call"]);
    expect(bob.sampled).toEqual(["bob-call"]);
    expect(alice.elicited).toEqual(["who runs alice-call?"]);
    expect(bob.elicited).toEqual(["who runs bob-call?"]);
    await vi.waitFor(() => expect(alice.logs).toContain("alice-call error"));
    await vi.waitFor(() => expect(bob.logs).toContain("bob-call error"));
    expect(alice.logs.every((l) => l.startsWith("alice-call"))).toBe(true);
    expect(bob.logs.every((l) => l.startsWith("bob-call"))).toBe(true);

    // The upstream saw tokens of the gateway's own, never a caller's.
    const seen = [upstream.progressTokens.get("alice-call"), upstream.progressTokens.get("bob-call")];
    expect(seen.every((t) => t !== undefined)).toBe(true);
  });

  it("forwards a progress token of the gateway's own and answers the caller with the caller's", async () => {
    const alice = await session("alice");
    const told: unknown[] = [];
    // The caller's own token, which the SDK would otherwise choose: its progress is read off the wire.
    alice.client.setNotificationHandler(ProgressNotificationSchema, async (n) => {
      told.push(n.params.progressToken);
    });
    await alice.client.callTool({
      name: "relay.converse",
      arguments: { tag: "own-token" },
      _meta: { progressToken: "alice-own-token" },
    });
    await vi.waitFor(() => expect(told).toEqual(["alice-own-token", "alice-own-token"]));
    const forwarded = upstream.progressTokens.get("own-token");
    expect(forwarded).toBeDefined();
    expect(forwarded).not.toBe("alice-own-token");
  });

  it("sends a session only the log messages at or above the level it set with logging/setLevel", async () => {
    const alice = await session("alice");
    const bob = await session("bob");
    await alice.client.setLoggingLevel("warning");
    await converse(alice, "quiet");
    await converse(bob, "loud");
    await vi.waitFor(() => expect(bob.logs).toEqual(["loud info", "loud error"]));
    await vi.waitFor(() => expect(alice.logs).toEqual(["quiet error"]));
  });

  it("audits a sampling request naming the upstream that asked and an elicitation answer as the user's", async () => {
    const carol = await session("carol");
    await converse(carol, "audited");
    await server.governor.flush();
    const records = (await call(server.url, "GET", "/v1/audit?user=carol&limit=50", { token: ADMIN })).body
      .records as { kind: string; reason: string; args: Record<string, unknown>; tool: string }[];
    const relayed = records.filter((r) => r.kind === "admin");
    const sampling = relayed.find((r) => r.args["method"] === "sampling/createMessage");
    const elicitation = relayed.find((r) => r.args["method"] === "elicitation/create");
    expect(sampling).toMatchObject({
      tool: "relay.converse",
      reason: "upstream relay asked carol's client for sampling: answered",
      args: { upstream: "relay", model: "carol-model" },
    });
    expect(typeof sampling?.args["session"]).toBe("string");
    expect(elicitation).toMatchObject({
      reason: "upstream relay asked carol's client for elicitation: the user answered accept",
      args: { upstream: "relay", action: "accept", fields: ["name"] },
    });
  });

  it("applies the call's output redaction to what is relayed: messages withheld, requests refused", async () => {
    const heidi = await session("heidi");
    const { progress } = await converse(heidi, "secret-1"); // its result, prose, is withheld too
    expect(heidi.sampled).toEqual([]);
    expect(heidi.elicited).toEqual([]);
    await server.governor.flush();
    const records = (await call(server.url, "GET", "/v1/audit?user=heidi&decision=deny", { token: ADMIN }))
      .body.records as { reason: string }[];
    expect(records.map((r) => r.reason).sort()).toEqual([
      "upstream relay asked heidi's client for elicitation: refused, as policy redacts the output of relay.converse",
      "upstream relay asked heidi's client for sampling: refused, as policy redacts the output of relay.converse",
    ]);
    expect(progress.every((m) => m?.startsWith("[withheld by onbehalf:"))).toBe(true);
    await vi.waitFor(() => expect(heidi.logs).toHaveLength(2));
    expect(heidi.logs.every((l) => l.startsWith("[withheld by onbehalf:") && !l.includes("secret-1"))).toBe(
      true,
    );
  });

  it("fails an upstream's sampling and elicitation cleanly when the user's client declared neither", async () => {
    const dave = await session("dave", {});
    const { text: said } = await converse(dave, "plain");
    expect(said).toMatch(/^sampling failed: .*declared no sampling capability/m);
    expect(said).toMatch(/^elicitation failed: .*declared no elicitation capability/m);
  });

  it("fails an upstream's sampling cleanly when the user's client has no stream open to receive it", async () => {
    const bearer = await idp.getToken({
      resource: `${GATEWAY}/mcp`,
      scope: "openid",
      claims: { sub: "ivan", tenant: "acme" },
    });
    // A client that declares sampling and elicitation but never opens GET /mcp.
    const post = (body: unknown, session?: string) =>
      fetch(`${server.url}/mcp`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${bearer}`,
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
          "mcp-protocol-version": "2025-06-18",
          ...(session === undefined ? {} : { "mcp-session-id": session }),
        },
        body: JSON.stringify(body),
      });
    const init = await post({
      jsonrpc: "2.0",
      id: 1,
      method: "initialize",
      params: {
        protocolVersion: "2025-06-18",
        capabilities: { sampling: {}, elicitation: {} },
        clientInfo: { name: "no-stream", version: "1.0.0" },
      },
    });
    const sid = init.headers.get("mcp-session-id") ?? "";
    await init.text();
    await (await post({ jsonrpc: "2.0", method: "notifications/initialized" }, sid)).text();
    const answer = await post(
      {
        jsonrpc: "2.0",
        id: 2,
        method: "tools/call",
        params: { name: "relay.converse", arguments: { tag: "blind" } },
      },
      sid,
    );
    const said = text(((await answer.json()) as { result: unknown }).result);
    expect(said).toMatch(/^sampling failed: .*has no open stream/m);
    expect(said).toMatch(/^elicitation failed: .*has no open stream/m);
  });

  it("relays what an upstream sends off the call's stream to the session whose one call is running, each user's to their own", async () => {
    const erin = await session("erin");
    const hank = await session("hank");
    upstream.meet(2); // both calls run at the upstream at once
    const [e, h] = await Promise.all([
      erin.client.callTool({ name: "relay.stray", arguments: { tag: "erin-stray", meet: true } }),
      hank.client.callTool({ name: "relay.stray", arguments: { tag: "hank-stray", meet: true } }),
    ]);
    expect(text(e)).toBe("stray sampling answered by erin-model");
    expect(text(h)).toBe("stray sampling answered by hank-model");
    expect(erin.sampled).toEqual(["erin-stray"]);
    expect(hank.sampled).toEqual(["hank-stray"]);
    await vi.waitFor(() => expect(erin.logs).toEqual(["erin-stray stray log"]));
    await vi.waitFor(() => expect(hank.logs).toEqual(["hank-stray stray log"]));

    // Each user session has an upstream session of its own, every request on it (its GET stream too) carrying
    // that user's on-behalf-of token only.
    const bySubject = [...upstream.subjects.values()].map((subs) => [...subs].join(","));
    expect(bySubject).toContain("erin");
    expect(bySubject).toContain("hank");
    expect(bySubject.every((subs) => !subs.includes(","))).toBe(true);
  });

  it("refuses a sampling request no user's call caused, sending it to no session", async () => {
    const ivan = await session("ivan");
    const result = await ivan.client.callTool({
      name: "relay.stray",
      arguments: { tag: "late", later: true },
    });
    expect(text(result)).toBe("late will ask later");
    await vi.waitFor(() => expect(upstream.strays).toHaveLength(1));
    expect(upstream.strays[0]).toMatch(/^late failed: .*none is running that caused it/);
    expect(ivan.sampled).toEqual([]);
    await server.governor.flush();
    const denied = (await call(server.url, "GET", "/v1/audit?decision=deny&limit=200", { token: ADMIN })).body
      .records as { kind: string; reason: string; args: Record<string, unknown> }[];
    expect(denied).toContainEqual(
      expect.objectContaining({
        reason:
          "upstream relay sent sampling/createMessage while no call of a user was running: refused, sent to no session",
        args: { upstream: "relay", method: "sampling/createMessage" },
      }),
    );
  });

  it("ends a user's upstream session when their gateway session ends", async () => {
    const judy = await session("judy");
    await judy.client.callTool({ name: "relay.stray", arguments: { tag: "judy-stray" } });
    const before = [...upstream.subjects].filter(([, subs]) => subs.has("judy")).map(([id]) => id);
    expect(before).toHaveLength(1);
    const ping = () => pingSession(upstream.url, before[0] as string);
    expect(await ping()).toBe(200);
    await (judy.client.transport as StreamableHTTPClientTransport).terminateSession();
    // the upstream forgot the session: a request on it is answered 404
    await vi.waitFor(async () => expect(await ping()).toBe(404));
  });

  it("relays a stdio upstream's progress (matched by token) but not its logs or requests: a pipe does not say which call they belong to", async () => {
    const grace = await session("grace");
    const progress: Progress[] = [];
    const result = await grace.client.callTool(
      { name: "pipe.converse", arguments: { tag: "piped" } },
      undefined,
      {
        onprogress: (p) => progress.push(p),
      },
    );
    expect(progress.map((p) => p.message)).toEqual(["piped piped"]);
    expect(text(result)).toMatch(/^sampling failed: .*none is running that caused it/);
    await new Promise((resolve) => setTimeout(resolve, 200)); // a relayed log would have arrived by now
    expect(grace.sampled).toEqual([]);
    expect(grace.logs).toEqual([]);
  });

  it("cancels a sampling request at the client when the upstream cancels it", async () => {
    const frank = await session("frank");
    const result = await frank.client.callTool({ name: "relay.withdraw", arguments: {} });
    expect(text(result)).toBe("withdrawn");
    await vi.waitFor(() => expect(frank.withdrawn).toEqual(["hang"]), { timeout: 5_000 });
    expect(frank.sampled).toEqual(["first", "hang"]);
  });

  it("cancels the upstream request when the client cancels its call", async () => {
    const alice = await session("alice");
    const controller = new AbortController();
    const pending = alice.client.callTool(
      { name: "relay.wait", arguments: { tag: "to-cancel" } },
      undefined,
      {
        signal: controller.signal,
      },
    );
    await vi.waitFor(() => expect(upstream.waiting).toContain("to-cancel"), { timeout: 5_000 });
    controller.abort("the user changed their mind");
    await expect(pending).rejects.toThrow();
    await vi.waitFor(() => expect(upstream.cancelled).toContain("to-cancel"), { timeout: 5_000 });
  });
});
