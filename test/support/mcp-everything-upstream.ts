/**
 * An MCP server over Streamable HTTP (the official SDK's low-level `Server`) that implements every server
 * scenario of the official conformance suite (`@modelcontextprotocol/conformance`, `conformance list`), written
 * from each scenario's "Server Implementation Requirements": the tools, resources, template, prompts,
 * completion, logging, progress, sampling, elicitation and the SSE resumption (SEP-1699) they ask for. The
 * gateway's conformance test runs the suite against it directly and through `/mcp`.
 */
import { createServer, type Server as HttpServer } from "node:http";
import { InMemoryEventStore } from "@modelcontextprotocol/sdk/examples/shared/inMemoryEventStore.js";
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import type { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import {
  CallToolRequestSchema,
  type CallToolResult,
  CompleteRequestSchema,
  CreateMessageResultSchema,
  ElicitResultSchema,
  ErrorCode,
  GetPromptRequestSchema,
  type GetPromptResult,
  ListPromptsRequestSchema,
  ListResourcesRequestSchema,
  ListResourceTemplatesRequestSchema,
  ListToolsRequestSchema,
  McpError,
  ReadResourceRequestSchema,
  type ReadResourceResult,
  SubscribeRequestSchema,
  UnsubscribeRequestSchema,
} from "@modelcontextprotocol/sdk/types.js";
import { mcpHandler } from "./mcp-upstream.js";

/** A 1×1 PNG. */
export const PNG =
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";

/** A WAV file with a header and no samples (8 kHz, mono, 8 bit). */
function emptyWav(): string {
  const b = Buffer.alloc(44);
  b.write("RIFF", 0);
  b.writeUInt32LE(36, 4);
  b.write("WAVEfmt ", 8);
  b.writeUInt32LE(16, 16);
  b.writeUInt16LE(1, 20);
  b.writeUInt16LE(1, 22);
  b.writeUInt32LE(8000, 24);
  b.writeUInt32LE(8000, 28);
  b.writeUInt16LE(1, 32);
  b.writeUInt16LE(8, 34);
  b.write("data", 36);
  b.writeUInt32LE(0, 40);
  return b.toString("base64");
}

const text = (t: string): CallToolResult => ({ content: [{ type: "text", text: t }] });
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));
const noArgs = { type: "object" as const, properties: {} };

type Extra = {
  sendNotification: (n: { method: string; params: Record<string, unknown> }) => Promise<void>;
  sendRequest: Server["request"];
  closeSSEStream?: () => void;
  _meta?: { progressToken?: string | number };
};
interface ToolSpec {
  readonly description: string;
  readonly inputSchema: Record<string, unknown>;
  run(args: Record<string, unknown>, extra: Extra, server: Server): Promise<CallToolResult>;
}

const ELICIT_DEFAULTS = {
  type: "object",
  properties: {
    name: { type: "string", default: "John Doe" },
    age: { type: "integer", default: 30 },
    score: { type: "number", default: 95.5 },
    status: { type: "string", enum: ["active", "inactive", "pending"], default: "active" },
    verified: { type: "boolean", default: true },
  },
};
const ELICIT_ENUMS = {
  type: "object",
  properties: {
    untitledSingle: { type: "string", enum: ["option1", "option2", "option3"] },
    titledSingle: {
      type: "string",
      oneOf: [
        { const: "value1", title: "First Option" },
        { const: "value2", title: "Second Option" },
      ],
    },
    legacyEnum: {
      type: "string",
      enum: ["opt1", "opt2", "opt3"],
      enumNames: ["Option One", "Option Two", "Option Three"],
    },
    untitledMulti: { type: "array", items: { type: "string", enum: ["option1", "option2", "option3"] } },
    titledMulti: {
      type: "array",
      items: {
        anyOf: [
          { const: "value1", title: "First Choice" },
          { const: "value2", title: "Second Choice" },
        ],
      },
    },
  },
};

async function elicit(server: Server, message: string, requestedSchema: object): Promise<string> {
  const answer = await server.request(
    { method: "elicitation/create", params: { message, requestedSchema } },
    ElicitResultSchema,
  );
  return `action=${answer.action}, content=${JSON.stringify(answer.content ?? {})}`;
}

const TOOLS: Record<string, ToolSpec> = {
  test_simple_text: {
    description: "Returns simple text",
    inputSchema: noArgs,
    run: async () => text("This is a simple text response for testing."),
  },
  test_image_content: {
    description: "Returns an image",
    inputSchema: noArgs,
    run: async () => ({ content: [{ type: "image", data: PNG, mimeType: "image/png" }] }),
  },
  test_audio_content: {
    description: "Returns audio",
    inputSchema: noArgs,
    run: async () => ({ content: [{ type: "audio", data: emptyWav(), mimeType: "audio/wav" }] }),
  },
  test_embedded_resource: {
    description: "Returns an embedded resource",
    inputSchema: noArgs,
    run: async () => ({
      content: [
        {
          type: "resource",
          resource: {
            uri: "test://embedded-resource",
            mimeType: "text/plain",
            text: "This is an embedded resource content.",
          },
        },
      ],
    }),
  },
  test_multiple_content_types: {
    description: "Returns text, an image and a resource",
    inputSchema: noArgs,
    run: async () => ({
      content: [
        { type: "text", text: "Multiple content types test:" },
        { type: "image", data: PNG, mimeType: "image/png" },
        {
          type: "resource",
          resource: {
            uri: "test://mixed-content-resource",
            mimeType: "application/json",
            text: JSON.stringify({ test: "data", value: 123 }),
          },
        },
      ],
    }),
  },
  test_tool_with_logging: {
    description: "Logs three messages while it runs",
    inputSchema: noArgs,
    run: async (_args, extra) => {
      const log = (data: string) =>
        extra.sendNotification({ method: "notifications/message", params: { level: "info", data } });
      await log("Tool execution started");
      await wait(50);
      await log("Tool processing data");
      await wait(50);
      await log("Tool execution completed");
      return text("Logging completed");
    },
  },
  test_error_handling: {
    description: "Always fails",
    inputSchema: noArgs,
    run: async () => ({
      isError: true,
      content: [{ type: "text", text: "This tool intentionally returns an error for testing" }],
    }),
  },
  test_tool_with_progress: {
    description: "Reports progress",
    inputSchema: noArgs,
    run: async (_args, extra) => {
      const progressToken = extra._meta?.progressToken;
      for (const progress of [0, 50, 100]) {
        if (progressToken !== undefined) {
          await extra.sendNotification({
            method: "notifications/progress",
            params: { progressToken, progress, total: 100 },
          });
        }
        if (progress < 100) await wait(50);
      }
      return text("Progress completed");
    },
  },
  test_sampling: {
    description: "Asks the client's model",
    inputSchema: { type: "object", properties: { prompt: { type: "string" } }, required: ["prompt"] },
    run: async (args, _extra, server) => {
      const answer = await server.request(
        {
          method: "sampling/createMessage",
          params: {
            messages: [{ role: "user", content: { type: "text", text: String(args["prompt"]) } }],
            maxTokens: 100,
          },
        },
        CreateMessageResultSchema,
      );
      const content = answer.content as { type: string; text?: string };
      return text(`LLM response: ${content.type === "text" ? content.text : content.type}`);
    },
  },
  test_elicitation: {
    description: "Asks the user",
    inputSchema: { type: "object", properties: { message: { type: "string" } }, required: ["message"] },
    run: async (args, _extra, server) =>
      text(
        `User response: ${await elicit(server, String(args["message"]), {
          type: "object",
          properties: {
            username: { type: "string", description: "User's response" },
            email: { type: "string", description: "User's email address" },
          },
          required: ["username", "email"],
        })}`,
      ),
  },
  test_elicitation_sep1034_defaults: {
    description: "Asks the user with defaults",
    inputSchema: noArgs,
    run: async (_args, _extra, server) =>
      text(`Elicitation completed: ${await elicit(server, "Defaults", ELICIT_DEFAULTS)}`),
  },
  test_elicitation_sep1330_enums: {
    description: "Asks the user with every kind of enum",
    inputSchema: noArgs,
    run: async (_args, _extra, server) =>
      text(`Elicitation completed: ${await elicit(server, "Enums", ELICIT_ENUMS)}`),
  },
  json_schema_2020_12_tool: {
    description: "Tool with JSON Schema 2020-12 features",
    inputSchema: {
      $schema: "https://json-schema.org/draft/2020-12/schema",
      type: "object",
      $defs: {
        address: { type: "object", properties: { street: { type: "string" }, city: { type: "string" } } },
      },
      properties: { name: { type: "string" }, address: { $ref: "#/$defs/address" } },
      additionalProperties: false,
    },
    run: async (args) => text(`Received ${JSON.stringify(args)}`),
  },
  test_reconnection: {
    description: "Closes its SSE stream mid-call; the answer arrives after the client reconnects",
    inputSchema: noArgs,
    run: async (_args, extra) => {
      await wait(50);
      extra.closeSSEStream?.();
      await wait(200);
      return text("Reconnection test completed successfully");
    },
  },
};

const RESOURCES: Record<
  string,
  ReadResourceResult["contents"][number] & { name: string; description: string }
> = {
  "test://static-text": {
    uri: "test://static-text",
    name: "static-text",
    description: "A static text resource",
    mimeType: "text/plain",
    text: "This is the content of the static text resource.",
  },
  "test://static-binary": {
    uri: "test://static-binary",
    name: "static-binary",
    description: "A static binary resource",
    mimeType: "image/png",
    blob: PNG,
  },
  "test://watched-resource": {
    uri: "test://watched-resource",
    name: "watched-resource",
    description: "A resource to subscribe to",
    mimeType: "text/plain",
    text: "Watched content.",
  },
};
const TEMPLATE = /^test:\/\/template\/([^/]+)\/data$/;

const PROMPTS: Record<
  string,
  {
    description: string;
    arguments?: { name: string; required: boolean }[];
    get(a: Record<string, string>): GetPromptResult;
  }
> = {
  test_simple_prompt: {
    description: "A simple prompt",
    get: () => ({
      messages: [{ role: "user", content: { type: "text", text: "This is a simple prompt for testing." } }],
    }),
  },
  test_prompt_with_arguments: {
    description: "A prompt with arguments",
    arguments: [
      { name: "arg1", required: true },
      { name: "arg2", required: true },
    ],
    get: (a) => ({
      messages: [
        {
          role: "user",
          content: { type: "text", text: `Prompt with arguments: arg1='${a["arg1"]}', arg2='${a["arg2"]}'` },
        },
      ],
    }),
  },
  test_prompt_with_embedded_resource: {
    description: "A prompt with an embedded resource",
    arguments: [{ name: "resourceUri", required: true }],
    get: (a) => ({
      messages: [
        {
          role: "user",
          content: {
            type: "resource",
            resource: {
              uri: String(a["resourceUri"]),
              mimeType: "text/plain",
              text: "Embedded resource content for testing.",
            },
          },
        },
        { role: "user", content: { type: "text", text: "Please process the embedded resource above." } },
      ],
    }),
  },
  test_prompt_with_image: {
    description: "A prompt with an image",
    get: () => ({
      messages: [
        { role: "user", content: { type: "image", data: PNG, mimeType: "image/png" } },
        { role: "user", content: { type: "text", text: "Please analyze the image above." } },
      ],
    }),
  },
};

function buildServer(subscribed: Set<string>): Server {
  const server = new Server(
    { name: "conformance-everything", version: "1.0.0" },
    {
      capabilities: {
        tools: {},
        resources: { subscribe: true },
        prompts: {},
        logging: {},
        completions: {},
      },
    },
  );
  server.setRequestHandler(ListToolsRequestSchema, async () => ({
    tools: Object.entries(TOOLS).map(([name, t]) => ({
      name,
      description: t.description,
      inputSchema: t.inputSchema as { type: "object" },
    })),
  }));
  server.setRequestHandler(CallToolRequestSchema, async (req, extra) => {
    const tool = TOOLS[req.params.name];
    if (tool === undefined) throw new McpError(ErrorCode.InvalidParams, `no tool ${req.params.name}`);
    return tool.run(req.params.arguments ?? {}, extra as unknown as Extra, server);
  });
  server.setRequestHandler(ListResourcesRequestSchema, async () => ({
    resources: Object.values(RESOURCES).map(({ uri, name, description, mimeType }) => ({
      uri,
      name,
      description,
      ...(mimeType === undefined ? {} : { mimeType }),
    })),
  }));
  server.setRequestHandler(ListResourceTemplatesRequestSchema, async () => ({
    resourceTemplates: [
      {
        uriTemplate: "test://template/{id}/data",
        name: "template",
        description: "Data by id",
        mimeType: "application/json",
      },
    ],
  }));
  server.setRequestHandler(ReadResourceRequestSchema, async (req) => {
    const uri = req.params.uri;
    const fixed = RESOURCES[uri];
    if (fixed !== undefined) {
      const { name: _n, description: _d, ...content } = fixed;
      return { contents: [content] };
    }
    const id = TEMPLATE.exec(uri)?.[1];
    if (id === undefined) throw new McpError(ErrorCode.InvalidParams, `no resource ${uri}`);
    return {
      contents: [
        {
          uri,
          mimeType: "application/json",
          text: JSON.stringify({ id, templateTest: true, data: `Data for ID: ${id}` }),
        },
      ],
    };
  });
  server.setRequestHandler(SubscribeRequestSchema, async (req) => {
    subscribed.add(req.params.uri);
    return {};
  });
  server.setRequestHandler(UnsubscribeRequestSchema, async (req) => {
    subscribed.delete(req.params.uri);
    return {};
  });
  server.setRequestHandler(ListPromptsRequestSchema, async () => ({
    prompts: Object.entries(PROMPTS).map(([name, p]) => ({
      name,
      description: p.description,
      ...(p.arguments === undefined ? {} : { arguments: p.arguments }),
    })),
  }));
  server.setRequestHandler(GetPromptRequestSchema, async (req) => {
    const prompt = PROMPTS[req.params.name];
    if (prompt === undefined) throw new McpError(ErrorCode.InvalidParams, `no prompt ${req.params.name}`);
    return prompt.get(req.params.arguments ?? {});
  });
  server.setRequestHandler(CompleteRequestSchema, async (req) => {
    const values = ["paris", "park", "party"].filter((v) => v.startsWith(req.params.argument.value));
    return { completion: { values, total: values.length, hasMore: false } };
  });
  return server;
}

export interface EverythingUpstream {
  /** `http://localhost:<port>/mcp`: the suite's DNS-rebinding scenario wants a localhost name. */
  readonly url: string;
  /** URIs subscribed to right now, over every session. */
  readonly subscribed: Set<string>;
  stop(): Promise<void>;
}

export async function startEverythingUpstream(): Promise<EverythingUpstream> {
  const subscribed = new Set<string>();
  const transports = new Map<string, StreamableHTTPServerTransport>();
  const handle = mcpHandler(transports, () => buildServer(subscribed), {
    eventStore: new InMemoryEventStore(),
    retryInterval: 100,
  });
  const http: HttpServer = createServer((req, res) => {
    const host = (req.headers.host ?? "").replace(/:\d+$/, "");
    const origin = req.headers.origin;
    // DNS rebinding: a localhost server answers only to localhost names.
    const local = (h: string) => ["localhost", "127.0.0.1", "[::1]"].includes(h);
    if (!local(host) || (origin !== undefined && !local(new URL(origin).hostname))) {
      res.writeHead(403).end();
      return;
    }
    void handle(req, res);
  });
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  const address = http.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    url: `http://localhost:${port}/mcp`,
    subscribed,
    stop: () =>
      new Promise<void>((resolve) => {
        for (const t of transports.values()) void t.close();
        transports.clear();
        http.closeAllConnections();
        http.close(() => resolve());
      }),
  };
}
