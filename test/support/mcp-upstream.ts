/** A real MCP server over Streamable HTTP (official SDK) that records what each request carried. */
import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import {
  StreamableHTTPServerTransport,
  type StreamableHTTPServerTransportOptions,
} from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { z } from "zod";

export interface HttpUpstream {
  readonly url: string;
  /** Authorization headers received, in order. */
  readonly authorizations: string[];
  stop(): Promise<void>;
  start(): Promise<void>;
}

function buildServer(seen: string[]): McpServer {
  const server = new McpServer({ name: "crm-upstream", version: "1.0.0" });
  server.registerTool(
    "get_customer",
    { description: "Look up a customer", inputSchema: { id: z.string() } },
    async ({ id }) => {
      const customer = { id, name: "Ada", ssn: "078-05-1120", cards: [{ number: "4111", brand: "visa" }] };
      return { content: [{ type: "text", text: JSON.stringify(customer) }] };
    },
  );
  server.registerTool(
    "list_orders",
    { description: "List orders", inputSchema: { customer: z.string() } },
    async ({ customer }) => ({
      content: [{ type: "text", text: JSON.stringify({ customer, orders: [1, 2] }) }],
    }),
  );
  server.registerTool("whoami", { description: "Echo the caller's authorization" }, async () => ({
    content: [{ type: "text", text: seen[seen.length - 1] ?? "" }],
  }));
  server.registerTool("huge", { description: "A very long answer" }, async () => ({
    content: [{ type: "text", text: "x".repeat(1_200_000) }],
  }));
  // What an upstream adds one day without telling anyone: nobody declared it, so nobody may call it.
  server.registerTool("export_all_customers", { description: "Every customer, in bulk" }, async () => ({
    content: [{ type: "text", text: JSON.stringify([{ id: "c-1", ssn: "078-05-1120" }]) }],
  }));
  return server;
}

/**
 * The request handler of an MCP server over Streamable HTTP, as a real one serves it: a session per client,
 * each with a server `build` makes, kept in `transports` (`options` adds to the transport's, e.g. an event store).
 */
export function mcpHandler(
  transports: Map<string, StreamableHTTPServerTransport>,
  build: () => { connect(t: StreamableHTTPServerTransport): Promise<void> },
  options: Partial<StreamableHTTPServerTransportOptions> = {},
): (req: IncomingMessage, res: ServerResponse) => Promise<void> {
  return async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = chunks.length > 0 ? JSON.parse(Buffer.concat(chunks).toString()) : undefined;
    const id = req.headers["mcp-session-id"];
    let transport = typeof id === "string" ? transports.get(id) : undefined;
    if (transport === undefined) {
      if (typeof id === "string") {
        res.writeHead(404).end();
        return;
      }
      const t = new StreamableHTTPServerTransport({
        ...options,
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (sid) => void transports.set(sid, t),
      });
      transport = t;
      await build().connect(t);
    }
    await transport.handleRequest(req, res, body);
  };
}

export async function startHttpUpstream(): Promise<HttpUpstream> {
  const authorizations: string[] = [];
  const transports = new Map<string, StreamableHTTPServerTransport>();
  let http: Server | undefined;
  let port = 0;
  const start = () =>
    new Promise<void>((resolve) => {
      const handle = mcpHandler(transports, () => buildServer(authorizations));
      http = createServer((req, res) => {
        authorizations.push(String(req.headers.authorization ?? ""));
        return handle(req, res);
      });
      http.listen(port, "127.0.0.1", () => {
        const a = http!.address();
        if (typeof a === "object" && a) port = a.port;
        resolve();
      });
    });
  await start();
  return {
    get url() {
      return `http://127.0.0.1:${port}/mcp`;
    },
    authorizations,
    start,
    stop: () =>
      new Promise<void>((resolve) => {
        transports.clear();
        http?.closeAllConnections();
        http?.close(() => resolve());
      }),
  };
}
