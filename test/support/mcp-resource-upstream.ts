/**
 * A real MCP server over Streamable HTTP (official SDK's McpServer) offering resources, a resource template
 * and prompts, for the gateway's resources and prompts tests. It records every URI it is asked to read.
 */
import { createServer, type Server } from "node:http";
import { completable } from "@modelcontextprotocol/sdk/server/completable.js";
import { McpServer, ResourceTemplate } from "@modelcontextprotocol/sdk/server/mcp.js";
import type { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { SubscribeRequestSchema, UnsubscribeRequestSchema } from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";
import { mcpHandler } from "./mcp-upstream.js";

export interface ResourceUpstream {
  readonly url: string;
  /** URIs read, in order. */
  readonly reads: string[];
  /** `subscribe <uri>` and `unsubscribe <uri>`, in order. */
  readonly subscriptions: string[];
  /** Send `notifications/resources/updated` for `uri` on every session. */
  touch(uri: string): Promise<void>;
  stop(): Promise<void>;
  /** Stop and start again on the same port, forgetting every session (as a restarted server does). */
  restart(): Promise<void>;
}

const json = (uri: string, value: unknown) => ({
  contents: [{ uri, mimeType: "application/json", text: JSON.stringify(value) }],
});

function buildServer(reads: string[], subscriptions: string[], scheme: string): McpServer {
  const server = new McpServer(
    { name: "crm-resources", version: "1.0.0" },
    { capabilities: { resources: { subscribe: true } } },
  );
  server.server.setRequestHandler(SubscribeRequestSchema, async (req) => {
    subscriptions.push(`subscribe ${req.params.uri}`);
    return {};
  });
  server.server.setRequestHandler(UnsubscribeRequestSchema, async (req) => {
    subscriptions.push(`unsubscribe ${req.params.uri}`);
    return {};
  });
  for (const id of ["42", "7"]) {
    server.registerResource(
      `customer-${id}`,
      `${scheme}://customers/${id}`,
      { mimeType: "application/json" },
      async (uri) => {
        reads.push(uri.href);
        return json(uri.href, { id, name: "Ada", ssn: "078-05-1120" });
      },
    );
  }
  server.registerResource(
    "customer-photo",
    `${scheme}://customers/photo`,
    { mimeType: "image/png" },
    async (uri) => {
      reads.push(uri.href);
      return {
        contents: [{ uri: uri.href, mimeType: "image/png", blob: Buffer.from("png").toString("base64") }],
      };
    },
  );
  server.registerResource(
    "order-1",
    `${scheme}://orders/1`,
    { mimeType: "application/json" },
    async (uri) => {
      reads.push(uri.href);
      return json(uri.href, { order: 1 });
    },
  );
  server.registerResource(
    "order",
    new ResourceTemplate(`${scheme}://orders/{id}`, {
      list: undefined,
      complete: { id: (value) => ["9", "10", "11"].filter((id) => id.startsWith(value)) },
    }),
    { mimeType: "application/json" },
    async (uri, { id }) => {
      reads.push(uri.href);
      return json(uri.href, { order: id });
    },
  );
  server.registerResource("huge", `${scheme}://reports/huge`, { mimeType: "text/plain" }, async (uri) => ({
    contents: [
      { uri: uri.href, text: "summary" },
      { uri: uri.href, text: "x".repeat(1_200_000) },
    ],
  }));
  // What an upstream adds one day without telling anyone: nobody declared it, so nobody may read it.
  server.registerResource("keys", `${scheme}://secret/keys`, { mimeType: "text/plain" }, async (uri) => {
    reads.push(uri.href);
    return { contents: [{ uri: uri.href, text: "sk-live-123" }] };
  });
  server.registerPrompt(
    "summarize",
    {
      description: "Summarize a customer",
      argsSchema: {
        customer: completable(z.string(), (value) =>
          ["c-1", "c-2", "vip-9"].filter((c) => c.startsWith(value)),
        ),
      },
    },
    ({ customer }) => ({
      messages: [
        {
          role: "user",
          content: {
            type: "text",
            text: JSON.stringify({ task: "summarize", customer, ssn: "078-05-1120" }),
          },
        },
      ],
    }),
  );
  server.registerPrompt("draft_order", { description: "Draft an order" }, () => ({
    messages: [{ role: "user", content: { type: "text", text: '{"task":"draft an order"}' } }],
  }));
  server.registerPrompt("internal", { description: "Not for agents" }, () => ({
    messages: [{ role: "user", content: { type: "text", text: "internal" } }],
  }));
  return server;
}

/** Its resources are `<scheme>://customers/42` and so on (default `crm`). */
export async function startResourceUpstream(scheme = "crm"): Promise<ResourceUpstream> {
  const reads: string[] = [];
  const subscriptions: string[] = [];
  const servers: McpServer[] = [];
  const transports = new Map<string, StreamableHTTPServerTransport>();
  const http: Server = createServer(
    mcpHandler(transports, () => {
      const built = buildServer(reads, subscriptions, scheme);
      servers.push(built);
      return built;
    }),
  );
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  const address = http.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  const stop = () =>
    new Promise<void>((resolve) => {
      transports.clear();
      http.closeAllConnections();
      http.close(() => resolve());
    });
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    reads,
    subscriptions,
    async touch(uri) {
      await Promise.allSettled(servers.map((s) => s.server.sendResourceUpdated({ uri })));
    },
    stop,
    async restart() {
      await stop();
      await new Promise<void>((resolve) => http.listen(port, "127.0.0.1", resolve));
    },
  };
}
