/**
 * MCP tools that put a customer's SSN everywhere an MCP result can carry it (text parts, notes, embedded
 * resources, structuredContent, images), and a real MCP server (official SDK, Streamable HTTP) that offers them.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";

export const SSN = "078-05-1120";
export const CARD = "4111111111111111";
export const customer = (id = "c-1") => ({
  id,
  name: "Ada",
  ssn: SSN,
  cards: [{ number: CARD, brand: "visa" }],
});
const json = (value: unknown) => JSON.stringify(value);
const b64 = (text: string) => Buffer.from(text).toString("base64");

/** Each tool's result, by name. */
export const LEAKY_TOOLS: Readonly<Record<string, () => CallToolResult>> = {
  two_json_parts: () => ({
    content: [
      { type: "text", text: json(customer("c-1")) },
      { type: "text", text: json(customer("c-2")) },
    ],
  }),
  json_and_note: () => ({
    content: [
      { type: "text", text: json(customer()) },
      { type: "text", text: `Note: Ada's SSN ${SSN} was verified by phone.` },
    ],
  }),
  embedded_json: () => ({
    content: [
      {
        type: "resource",
        resource: { uri: "crm://customers/c-1", mimeType: "application/json", text: json(customer()) },
      },
    ],
  }),
  embedded_blob: () => ({
    content: [
      {
        type: "resource",
        resource: {
          uri: "crm://customers/c-1.json",
          mimeType: "application/json",
          blob: b64(json(customer())),
        },
      },
    ],
  }),
  structured_without_field: () => ({
    content: [{ type: "text", text: json(customer()) }],
    structuredContent: { id: "c-1", name: "Ada" },
  }),
  structured: () => ({
    content: [{ type: "text", text: json(customer()) }],
    structuredContent: customer(),
  }),
  plain_text: () => ({ content: [{ type: "text", text: `Ada Lovelace, SSN ${SSN}, card ${CARD}` }] }),
  image: () => ({ content: [{ type: "image", data: b64(`scan of a card: ${SSN}`), mimeType: "image/png" }] }),
  /** Same as json_and_note: its tools entry says `unparsed_output: pass`. */
  notes_passed: () => LEAKY_TOOLS["json_and_note"]!(),
  /** Same as plain_text: its policy does not redact. */
  plain_text_audited: () => LEAKY_TOOLS["plain_text"]!(),
};

/** Register every leaky tool on `server`, each handler passed through `wrap` (e.g. `governedHandler`). */
export function registerLeakyTools(
  server: McpServer,
  wrap: (name: string, handler: () => Promise<CallToolResult>) => (...params: never[]) => unknown = (_n, h) =>
    h,
): void {
  for (const [name, result] of Object.entries(LEAKY_TOOLS)) {
    server.registerTool(
      name,
      { description: `Leaks an SSN (${name})` },
      wrap(name, async () => result()) as () => Promise<CallToolResult>,
    );
  }
}

export interface LeakyUpstream {
  readonly url: string;
  stop(): Promise<void>;
}

/** A stateless MCP server over Streamable HTTP offering {@link LEAKY_TOOLS}. */
export async function startLeakyUpstream(): Promise<LeakyUpstream> {
  const http: Server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = chunks.length > 0 ? JSON.parse(Buffer.concat(chunks).toString()) : undefined;
    const server = new McpServer({ name: "leaky-crm", version: "1.0.0" });
    registerLeakyTools(server);
    const transport = new StreamableHTTPServerTransport({}); // stateless;
    res.on("close", () => void server.close());
    await server.connect(transport);
    await transport.handleRequest(req, res, body);
  });
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(http.address() as AddressInfo).port}/mcp`,
    stop: () =>
      new Promise<void>((resolve) => {
        http.closeAllConnections();
        http.close(() => resolve());
      }),
  };
}
