/**
 * The gateway session's transport: the SDK's `StreamableHTTPServerTransport`, with one request answered
 * without it. The SDK transport turns each Node request into a WHATWG `Request` and its answer into a
 * `Response` (through `@hono/node-server`), which on this project's 2-core machine cost about as much as the
 * rest of a governed `tools/call` (docs/BENCHMARKS.md, gateway). The request it is spared is the plain one: a
 * POST of a single JSON-RPC request (not `initialize`) on an initialized session, with the headers the SDK
 * would accept (both media types in `Accept`, a JSON body, a supported `MCP-Protocol-Version` or none). That
 * one goes to the SDK server's protocol handler as the SDK transport would hand it over (the validated
 * message, `authInfo`, `requestInfo`), and its answer is written as the SDK transport writes it in JSON
 * response mode (`enableJsonResponse`, the gateway's mode): status 200, `Content-Type: application/json`,
 * `Mcp-Session-Id`, the JSON-RPC response as the body. Everything else (initialize, batches, notifications,
 * GET streams, DELETE, every request the SDK would refuse) goes to the SDK transport, so its answers, errors
 * included, stay the SDK's.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AuthInfo } from "@modelcontextprotocol/sdk/server/auth/types.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import type { Transport, TransportSendOptions } from "@modelcontextprotocol/sdk/shared/transport.js";
import {
  isJSONRPCErrorResponse,
  isJSONRPCResultResponse,
  type JSONRPCMessage,
  type JSONRPCRequest,
  JSONRPCRequestSchema,
  type MessageExtraInfo,
  type RequestId,
  SUPPORTED_PROTOCOL_VERSIONS,
} from "@modelcontextprotocol/sdk/types.js";

type Options = ConstructorParameters<typeof StreamableHTTPServerTransport>[0];

/** `application/json`, with parameters or none (anything else is left to the SDK transport to judge). */
const JSON_TYPE = /^application\/json\s*(;|$)/i;

/**
 * A session's transport for the SDK `Server`: the SDK's, plus `answer()` for the plain request.
 *
 * @example
 * const transport = new GatewayServerTransport({ sessionIdGenerator: () => randomUUID(), enableJsonResponse: true });
 * await server.connect(transport);
 * if (!transport.answer(req, res, body, auth)) await transport.handleRequest(req, res, body);
 */
export class GatewayServerTransport implements Transport {
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: (message: JSONRPCMessage, extra?: MessageExtraInfo) => void;
  private readonly sdk: StreamableHTTPServerTransport;
  /** Requests answered here, waiting for the server's answer, by JSON-RPC id. */
  private readonly waiting = new Map<RequestId, ServerResponse>();
  private closed = false;

  constructor(options: Options) {
    this.sdk = new StreamableHTTPServerTransport(options);
    this.sdk.onclose = () => {
      this.closed = true; // closed by the SDK transport itself (a DELETE): nothing more is answered here
      this.onclose?.();
    };
    this.sdk.onerror = (e) => this.onerror?.(e);
    this.sdk.onmessage = (m, extra) => this.onmessage?.(m, extra);
  }

  get sessionId(): string | undefined {
    return this.sdk.sessionId;
  }

  start(): Promise<void> {
    return this.sdk.start();
  }

  async close(): Promise<void> {
    this.closed = true;
    // The SDK transport leaves a JSON-mode request it has not answered open when it closes; these are ended.
    for (const [, res] of this.waiting) writeJson(res, 404, undefined, SESSION_GONE);
    this.waiting.clear();
    await this.sdk.close();
  }

  send(message: JSONRPCMessage, options?: TransportSendOptions): Promise<void> {
    if ((isJSONRPCResultResponse(message) || isJSONRPCErrorResponse(message)) && message.id !== undefined) {
      const res = this.waiting.get(message.id);
      if (res !== undefined) {
        this.waiting.delete(message.id);
        writeJson(res, 200, this.sessionId, message);
        return Promise.resolve();
      }
    } else if (options?.relatedRequestId !== undefined && this.waiting.has(options.relatedRequestId)) {
      // What a handler sends about its request goes nowhere in JSON response mode (the SDK's does the same):
      // the gateway relays it on the session's GET stream instead (mcp-relay.ts).
      return Promise.resolve();
    }
    return this.sdk.send(
      message,
      options?.relatedRequestId === undefined ? undefined : { relatedRequestId: options.relatedRequestId },
    );
  }

  /** The SDK transport's handling of a request (all but the plain one). */
  handleRequest(
    req: IncomingMessage & { auth?: AuthInfo },
    res: ServerResponse,
    body: unknown,
  ): Promise<void> {
    return this.sdk.handleRequest(req, res, body);
  }

  /**
   * Hand the plain request (see the file comment) to the server and answer it when the server does; false,
   * having done nothing, for any other request.
   */
  answer(req: IncomingMessage, res: ServerResponse, body: unknown, authInfo: AuthInfo): boolean {
    const request = plainRequest(req, body);
    if (request === undefined || this.closed || this.sessionId === undefined) return false;
    if (req.headers["mcp-session-id"] !== this.sessionId || this.waiting.has(request.id)) return false;
    this.waiting.set(request.id, res);
    res.once("close", () => {
      if (this.waiting.get(request.id) === res) this.waiting.delete(request.id);
    });
    this.onmessage?.(request, {
      authInfo,
      requestInfo: { headers: plainHeaders(req), url: requestUrl(req) },
    });
    return true;
  }
}

const SESSION_GONE = { jsonrpc: "2.0", error: { code: -32001, message: "Session not found" }, id: null };

/** The request, validated as the SDK transport validates it, when it is the plain one; else undefined. */
function plainRequest(req: IncomingMessage, body: unknown): JSONRPCRequest | undefined {
  if (req.method !== "POST" || typeof body !== "object" || body === null || Array.isArray(body))
    return undefined;
  const method = (body as { method?: unknown }).method;
  if (typeof method !== "string" || method === "initialize") return undefined;
  const accept = req.headers.accept;
  if (accept === undefined || !accept.includes("application/json") || !accept.includes("text/event-stream")) {
    return undefined;
  }
  if (!JSON_TYPE.test(req.headers["content-type"] ?? "")) return undefined;
  const version = req.headers["mcp-protocol-version"];
  if (
    version !== undefined &&
    !(typeof version === "string" && SUPPORTED_PROTOCOL_VERSIONS.includes(version))
  ) {
    return undefined;
  }
  if (plainShape(body as Record<string, unknown>)) return body as JSONRPCRequest;
  const parsed = JSONRPCRequestSchema.safeParse(body);
  return parsed.success ? parsed.data : undefined;
}

/**
 * What `JSONRPCRequestSchema` accepts, checked without zod for the usual request: only its four members,
 * `jsonrpc` "2.0", a string or integer id, a string method, params an object without `_meta` (a request with
 * `_meta` is checked by the schema, which validates what `_meta` holds).
 */
function plainShape(body: Record<string, unknown>): boolean {
  for (const key in body) {
    if (key !== "jsonrpc" && key !== "id" && key !== "method" && key !== "params") return false;
  }
  const { id, params } = body;
  if (body["jsonrpc"] !== "2.0" || !(typeof id === "string" || Number.isInteger(id))) return false;
  if (params === undefined) return true;
  return typeof params === "object" && params !== null && !Array.isArray(params) && !("_meta" in params);
}

/** The request's headers as the SDK transport hands them to handlers (lower-case names, one string each). */
function plainHeaders(req: IncomingMessage): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(", ") : value;
  }
  return headers;
}

function requestUrl(req: IncomingMessage): URL {
  return new URL(req.url ?? "/", `http://${req.headers.host ?? "localhost"}`);
}

function writeJson(res: ServerResponse, status: number, sessionId: string | undefined, body: unknown): void {
  if (res.destroyed || res.writableEnded) return;
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    ...(sessionId === undefined ? {} : { "mcp-session-id": sessionId }),
  });
  res.end(text);
}
