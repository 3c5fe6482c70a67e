/**
 * A real MCP server over Streamable HTTP (official SDK) that talks back while a call runs, for the relay tests:
 * `converse` reports progress, logs at two levels, asks for sampling and for elicitation, each tagged with the
 * call's `tag`; `wait` runs until it is cancelled; `withdraw` asks for sampling and cancels its request; `stray`
 * logs and asks for sampling on its session's standalone stream, not related to the call's request (as the SDK's
 * `server.createMessage()` does by default), during the call or, with `later`, after it answered. It records
 * the subject of the bearer token of every request, by upstream session.
 */
import { createServer, type Server } from "node:http";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import type { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import {
  type CallToolResult,
  CreateMessageResultSchema,
  ElicitResultSchema,
} from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";
import { mcpHandler } from "./mcp-upstream.js";

export interface RelayUpstream {
  readonly url: string;
  /** The progress tokens `converse` calls arrived with, by tag. */
  readonly progressTokens: Map<string, unknown>;
  /** Tags of `wait` calls that started, and of those whose cancellation arrived. */
  readonly waiting: string[];
  readonly cancelled: string[];
  /** What `stray` calls with `later` learnt of their sampling request, once it ended. */
  readonly strays: string[];
  /** By upstream session id: the `sub` of each bearer token its requests carried. */
  readonly subjects: Map<string, Set<string>>;
  /** Lets `converse` and `stray` calls with `meet: true` go on once this many of them are running at once. */
  meet(count: number): void;
  stop(): Promise<void>;
}

export async function startRelayUpstream(): Promise<RelayUpstream> {
  const progressTokens = new Map<string, unknown>();
  const waiting: string[] = [];
  const cancelled: string[] = [];
  const strays: string[] = [];
  const subjects = new Map<string, Set<string>>();
  let expected = 0;
  let arrived = 0;
  let release = () => {};
  let met = new Promise<void>((r) => {
    release = r;
  });

  const build = (): McpServer => {
    const server = new McpServer(
      { name: "relay-upstream", version: "1.0.0" },
      { capabilities: { logging: {} } },
    );
    server.registerTool(
      "converse",
      {
        description: "Talk back while running",
        inputSchema: { tag: z.string(), meet: z.boolean().optional() },
      },
      async ({ tag, meet }, extra): Promise<CallToolResult> => {
        const token = extra._meta?.progressToken;
        progressTokens.set(tag, token);
        if (meet === true) {
          arrived++;
          if (arrived >= expected) release();
          await met;
        }
        const said: string[] = [];
        if (token !== undefined) {
          await extra.sendNotification({
            method: "notifications/progress",
            params: { progressToken: token, progress: 1, total: 2, message: `${tag} half` },
          });
        }
        await extra.sendNotification({
          method: "notifications/message",
          params: { level: "info", logger: "relay", data: `${tag} info` },
        });
        await extra.sendNotification({
          method: "notifications/message",
          params: { level: "error", logger: "relay", data: `${tag} error` },
        });
        try {
          const sampled = await extra.sendRequest(
            {
              method: "sampling/createMessage",
              params: { messages: [{ role: "user", content: { type: "text", text: tag } }], maxTokens: 20 },
            },
            CreateMessageResultSchema,
          );
          said.push(`sampled ${sampled.model}: ${(sampled.content as { text: string }).text}`);
        } catch (e) {
          said.push(`sampling failed: ${(e as Error).message}`);
        }
        try {
          const answer = await extra.sendRequest(
            {
              method: "elicitation/create",
              params: {
                message: `who runs ${tag}?`,
                requestedSchema: { type: "object", properties: { name: { type: "string" } } },
              },
            },
            ElicitResultSchema,
          );
          said.push(`elicited ${answer.action}: ${JSON.stringify(answer.content ?? {})}`);
        } catch (e) {
          said.push(`elicitation failed: ${(e as Error).message}`);
        }
        if (token !== undefined) {
          await extra.sendNotification({
            method: "notifications/progress",
            params: { progressToken: token, progress: 2, total: 2, message: `${tag} done` },
          });
        }
        return { content: [{ type: "text", text: said.join("\n") }] };
      },
    );
    server.registerTool(
      "wait",
      { description: "Run until cancelled", inputSchema: { tag: z.string() } },
      async ({ tag }, extra): Promise<CallToolResult> => {
        waiting.push(tag);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 20_000);
          extra.signal.addEventListener("abort", () => {
            cancelled.push(tag);
            clearTimeout(timer);
            resolve();
          });
        });
        return { content: [{ type: "text", text: `${tag} ended` }] };
      },
    );
    server.registerTool(
      "withdraw",
      { description: "Ask for sampling, then cancel the request" },
      async (extra) => {
        // A first request answered as usual: SDK 1.32 ignores a cancellation of request id 0 (`!requestId`,
        // typescript-sdk issue 2283), so the one to cancel must not be the first on either connection.
        await extra.sendRequest(
          {
            method: "sampling/createMessage",
            params: { messages: [{ role: "user", content: { type: "text", text: "first" } }], maxTokens: 5 },
          },
          CreateMessageResultSchema,
        );
        const asking = new AbortController();
        const asked = extra.sendRequest(
          {
            method: "sampling/createMessage",
            params: { messages: [{ role: "user", content: { type: "text", text: "hang" } }], maxTokens: 5 },
          },
          CreateMessageResultSchema,
          { signal: asking.signal },
        );
        setTimeout(() => asking.abort("not needed any more"), 500);
        try {
          await asked;
          return { content: [{ type: "text", text: "answered" }] };
        } catch {
          return { content: [{ type: "text", text: "withdrawn" }] };
        }
      },
    );
    server.registerTool(
      "stray",
      {
        description: "Log and ask for sampling off the call's stream",
        inputSchema: { tag: z.string(), meet: z.boolean().optional(), later: z.boolean().optional() },
      },
      async ({ tag, meet, later }) => {
        const ask = () =>
          // No relatedRequestId: the request goes out on this session's standalone stream.
          server.server.createMessage({
            messages: [{ role: "user", content: { type: "text", text: tag } }],
            maxTokens: 5,
          });
        if (later === true) {
          setTimeout(() => {
            ask().then(
              (r) => strays.push(`${tag} answered by ${r.model}`),
              (e: Error) => strays.push(`${tag} failed: ${e.message}`),
            );
          }, 50);
          return { content: [{ type: "text", text: `${tag} will ask later` }] };
        }
        if (meet === true) {
          arrived++;
          if (arrived >= expected) release();
          await met;
        }
        await server.server.sendLoggingMessage({ level: "info", data: `${tag} stray log` });
        try {
          const r = await ask();
          return { content: [{ type: "text", text: `stray sampling answered by ${r.model}` }] };
        } catch (e) {
          return { content: [{ type: "text", text: `stray sampling failed: ${(e as Error).message}` }] };
        }
      },
    );
    return server;
  };

  const transports = new Map<string, StreamableHTTPServerTransport>();
  const handle = mcpHandler(transports, build);
  const http: Server = createServer((req, res) => {
    const session = req.headers["mcp-session-id"];
    const bearer = String(req.headers.authorization ?? "").replace(/^Bearer /, "");
    if (typeof session === "string" && bearer !== "") {
      const claims = JSON.parse(Buffer.from(bearer.split(".")[1] ?? "", "base64url").toString());
      const seen = subjects.get(session) ?? new Set<string>();
      seen.add(String(claims.sub));
      subjects.set(session, seen);
    }
    return handle(req, res);
  });
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  const address = http.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    progressTokens,
    waiting,
    cancelled,
    strays,
    subjects,
    meet(count) {
      expected = count;
      arrived = 0;
      met = new Promise<void>((r) => {
        release = r;
      });
    },
    stop: () =>
      new Promise<void>((resolve) => {
        for (const t of transports.values()) void t.close();
        http.closeAllConnections();
        http.close(() => resolve());
      }),
  };
}

/** The HTTP status of a `ping` on upstream session `id` (404 once the upstream forgot it). */
export function pingSession(url: string, id: string): Promise<number> {
  return fetch(url, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-protocol-version": "2025-06-18",
      "mcp-session-id": id,
    },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" }),
  }).then((res) => res.status);
}
