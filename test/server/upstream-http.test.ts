/**
 * The gateway's HTTP transport to its upstreams (src/server/upstream-http.ts): the SDK client on it talks to an
 * SDK server answering in JSON or in SSE, sends each request's headers, reports a refused request as the SDK
 * transport does (StreamableHTTPError with the status), and ends its session with DELETE; its SSE parser reads
 * what servers write however the bytes are split.
 */
import { createServer, type Server } from "node:http";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPError } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import type { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { HttpClientTransport, keepAliveAgent, sseParser } from "../../src/server/upstream-http.js";
import { mcpHandler } from "../support/mcp-upstream.js";

const servers: Server[] = [];
afterAll(() => Promise.all(servers.map((s) => new Promise((r) => s.close(r)))));

/** An SDK MCP server over Streamable HTTP, answering in JSON or SSE; it records each request's headers. */
async function upstream(enableJsonResponse: boolean) {
  const transports = new Map<string, StreamableHTTPServerTransport>();
  const seen: { method: string; headers: Record<string, unknown> }[] = [];
  const handle = mcpHandler(
    transports,
    () => {
      const server = new McpServer({ name: "echo", version: "1.0.0" });
      server.registerTool("echo", { inputSchema: { text: z.string() } }, async ({ text }) => ({
        content: [{ type: "text", text }],
      }));
      return server;
    },
    { enableJsonResponse },
  );
  const http = createServer((req, res) => {
    seen.push({ method: req.method ?? "", headers: { ...req.headers } });
    return handle(req, res);
  });
  servers.push(http);
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  const a = http.address();
  const url = new URL(`http://127.0.0.1:${typeof a === "object" && a ? a.port : 0}/mcp`);
  return { url, seen, transports };
}

describe("the upstream transport under the SDK client", () => {
  for (const json of [true, false]) {
    it(`calls a tool on a server answering in ${json ? "JSON" : "SSE"}, with each request's headers`, async () => {
      const up = await upstream(json);
      let n = 0;
      const transport = new HttpClientTransport(up.url, {
        agent: keepAliveAgent(up.url),
        headers: () => ({ authorization: `Bearer token-${++n}` }),
      });
      const client = new Client({ name: "gateway", version: "1.0.0" });
      await client.connect(transport);
      const result = await client.callTool({ name: "echo", arguments: { text: "hi" } });
      expect(result.content).toEqual([{ type: "text", text: "hi" }]);
      const posts = up.seen.filter((r) => r.method === "POST");
      // initialize, initialized, tools/call: each with the token of its moment, the session after initialize
      expect(posts.map((r) => r.headers["authorization"])).toEqual(
        expect.arrayContaining(["Bearer token-1", "Bearer token-2"]),
      );
      const last = posts[posts.length - 1]!.headers;
      expect(last["mcp-session-id"]).toBe(transport.sessionId);
      expect(last["mcp-protocol-version"]).toBeTypeOf("string");
      await transport.terminateSession();
      expect(up.seen[up.seen.length - 1]!.method).toBe("DELETE");
      expect(transport.sessionId).toBeUndefined();
      await client.close();
    });
  }

  it("reports a refused request as the SDK transport does: StreamableHTTPError with the HTTP status", async () => {
    const up = await upstream(true);
    const transport = new HttpClientTransport(up.url, { agent: keepAliveAgent(up.url), headers: () => ({}) });
    const client = new Client({ name: "gateway", version: "1.0.0" });
    await client.connect(transport);
    up.transports.clear(); // the server forgot the session: it answers 404
    const failed = await client
      .callTool({ name: "echo", arguments: { text: "hi" } })
      .catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(StreamableHTTPError);
    expect((failed as StreamableHTTPError).code).toBe(404);
    await client.close();
  });
});

function parse(chunks: string[]): {
  events: { id?: string; event?: string; data: string }[];
  retry: number[];
} {
  const events: { id?: string; event?: string; data: string }[] = [];
  const retry: number[] = [];
  const feed = sseParser(
    (e) =>
      events.push({
        ...(e.id === undefined ? {} : { id: e.id }),
        ...(e.event === undefined ? {} : { event: e.event }),
        data: e.data,
      }),
    (ms) => retry.push(ms),
  );
  for (const c of chunks) feed(c);
  return { events, retry };
}

describe("the upstream transport's SSE parser", () => {
  const stream = 'event: message\nid: 7\ndata: {"a":1}\n\n: keep-alive\n\ndata: line one\ndata: line two\n\n';
  const expected = [{ id: "7", event: "message", data: '{"a":1}' }, { data: "line one\nline two" }];

  it("reads events, ids, comments and multi-line data", () => {
    expect(parse([stream]).events).toEqual(expected);
  });

  it("reads the same events split at every byte", () => {
    expect(parse([...stream]).events).toEqual(expected);
  });

  it("takes \\r\\n and \\r as line ends, also when a \\r\\n is split between chunks", () => {
    const crlf = stream.replaceAll("\n", "\r\n");
    expect(parse([crlf]).events).toEqual(expected);
    expect(parse([...crlf]).events).toEqual(expected);
    expect(parse([stream.replaceAll("\n", "\r")]).events).toEqual(expected);
  });

  it("dispatches nothing before the blank line, and takes the server's retry interval", () => {
    expect(parse(['data: {"half":']).events).toEqual([]);
    const r = parse(["retry: 2500\n\ndata:x\n\n"]);
    expect(r.retry).toEqual([2500]);
    expect(r.events).toEqual([{ data: "x" }]);
  });
});

describe("a kept-alive socket the upstream resets as a request goes out", () => {
  /** An upstream that answers every JSON-RPC request with `{}`, but resets the connection of the next one. */
  async function resetting() {
    const methods: string[] = [];
    let dropNext = false;
    const http = createServer((req, res) => {
      let text = "";
      req.on("data", (c) => {
        text += c;
      });
      req.on("end", () => {
        const message = JSON.parse(text) as { id: number; method: string };
        methods.push(message.method);
        if (dropNext) {
          dropNext = false;
          req.socket.resetAndDestroy();
          return;
        }
        res.setHeader("content-type", "application/json");
        res.end(JSON.stringify({ jsonrpc: "2.0", id: message.id, result: {} }));
      });
    });
    servers.push(http);
    await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
    const a = http.address();
    const url = new URL(`http://127.0.0.1:${typeof a === "object" && a ? a.port : 0}/mcp`);
    const transport = new HttpClientTransport(url, { agent: keepAliveAgent(url), headers: () => ({}) });
    const answered: unknown[] = [];
    transport.onmessage = (m) => answered.push(m);
    await transport.start();
    await transport.send({ jsonrpc: "2.0", id: 1, method: "ping" }); // opens the socket the next one reuses
    return {
      methods,
      answered,
      transport,
      dropNext: () => {
        dropNext = true;
      },
    };
  }

  it("sends a request that may be repeated again, once", async () => {
    const up = await resetting();
    up.dropNext();
    await up.transport.send({ jsonrpc: "2.0", id: 2, method: "tools/list" });
    expect(up.methods).toEqual(["ping", "tools/list", "tools/list"]);
    expect(up.answered).toContainEqual({ jsonrpc: "2.0", id: 2, result: {} });
    await up.transport.close();
  });

  it("never sends a tool call twice: the upstream may have run it", async () => {
    const up = await resetting();
    up.dropNext();
    await expect(
      up.transport.send({
        jsonrpc: "2.0",
        id: 2,
        method: "tools/call",
        params: { name: "refund", arguments: {} },
      }),
    ).rejects.toThrow(/ECONNRESET|socket hang up/);
    expect(up.methods).toEqual(["ping", "tools/call"]);
    await up.transport.close();
  });
});
