/**
 * The MCP Streamable HTTP client transport the gateway uses towards its HTTP upstreams: the SDK's `Client` (and
 * with it the protocol: request ids, timeouts, progress, cancellation, result validation, the handlers of what
 * the upstream asks) runs on it unchanged; only the HTTP underneath differs from the SDK's
 * `StreamableHTTPClientTransport`. That one goes through `fetch` and WHATWG streams (a `Request`, a `Response`,
 * a `TextDecoderStream` and an SSE parser stream per call, plus the stream the gateway's own-signal `fetch`
 * wrapper added): measured on this project's 2-core machine it cost ~1.2–1.8 ms of CPU per `tools/call`
 * against ~0.4 ms for the same request on `node:http` (docs/BENCHMARKS.md, gateway). This one sends on
 * `node:http(s)` through one keep-alive agent per upstream, and reads SSE with a small parser on strings.
 *
 * What it keeps of the SDK transport's behaviour: the session id and protocol version headers, JSON and SSE
 * answers to a POST, 202 for notifications and responses, the standalone GET stream opened once the session is
 * initialized (405 means the server has none), a stream that ends before its answer resumed with
 * `Last-Event-ID` when the server gave event ids (the GET stream reconnected, with the SDK's backoff and
 * retries), `terminateSession()` as an HTTP DELETE, and the SDK's `StreamableHTTPError` (with the HTTP status
 * as its code) for a refused request. Not kept: OAuth (`authProvider`: the gateway sends its own on-behalf-of
 * token), redirects (an upstream's `url` is where it answers; a redirect is an error naming its status).
 */
import http, { type IncomingMessage } from "node:http";
import https from "node:https";
import { StreamableHTTPError } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { Transport, TransportSendOptions } from "@modelcontextprotocol/sdk/shared/transport.js";
import {
  isInitializedNotification,
  isJSONRPCRequest,
  isJSONRPCResultResponse,
  type JSONRPCMessage,
  JSONRPCMessageSchema,
} from "@modelcontextprotocol/sdk/types.js";

/** The SDK transport's reconnection defaults for the GET stream. */
const RECONNECT = { initialMs: 1000, maxMs: 30_000, grow: 1.5, maxRetries: 2 };

export interface HttpClientTransportOptions {
  /**
   * Headers for each request (the authorization), read when the request is sent: in the async context of the
   * call that sends it, so a call's on-behalf-of token is that call's user's.
   */
  readonly headers: () => Record<string, string>;
  /** The keep-alive agent its requests share (one per upstream). */
  readonly agent: http.Agent;
}

/** One SSE event as the parser hands it over. */
interface SseEvent {
  id: string | undefined;
  event: string | undefined;
  data: string;
}

/**
 * A keep-alive agent for an upstream's URL (http or https).
 *
 * @example
 * const agent = keepAliveAgent(new URL("https://crm.example/mcp"));
 */
export function keepAliveAgent(url: URL): http.Agent {
  // An idle socket is closed after 4 s, before servers close theirs (Node's default keep-alive timeout is 5 s):
  // a request seldom goes out on a socket its server is closing.
  const options = { keepAlive: true, scheduling: "lifo" as const, timeout: 4_000 };
  return url.protocol === "https:" ? new https.Agent(options) : new http.Agent(options);
}

/**
 * MCP Streamable HTTP over `node:http`, for the SDK's `Client`.
 *
 * @example
 * const client = new Client({ name: "gw", version: "1" });
 * await client.connect(new HttpClientTransport(new URL(url), { headers: () => ({}), agent: keepAliveAgent(url) }));
 */
export class HttpClientTransport implements Transport {
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: (message: JSONRPCMessage) => void;
  private _sessionId: string | undefined;
  private protocolVersion: string | undefined;
  private started = false;
  private closed = false;
  /** Requests and streams open now: ended when the transport closes. */
  private readonly open = new Set<http.ClientRequest>();
  private reconnectTimer: NodeJS.Timeout | undefined;
  /** The retry interval the server asked for in an SSE stream, if any. */
  private serverRetryMs: number | undefined;
  private readonly request: typeof http.request;
  /** The last message of an SSE stream handed to the client (see readSse). */
  private delivered: Promise<void> = Promise.resolve();

  constructor(
    private readonly url: URL,
    private readonly options: HttpClientTransportOptions,
  ) {
    this.request = url.protocol === "https:" ? https.request : http.request;
  }

  get sessionId(): string | undefined {
    return this._sessionId;
  }

  setProtocolVersion(version: string): void {
    this.protocolVersion = version;
  }

  async start(): Promise<void> {
    if (this.started) throw new Error("HttpClientTransport already started");
    this.started = true;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    for (const req of this.open) req.destroy();
    this.open.clear();
    this.onclose?.();
  }

  async send(message: JSONRPCMessage | JSONRPCMessage[], options?: TransportSendOptions): Promise<void> {
    try {
      if (options?.resumptionToken !== undefined) {
        // A request whose answer is still owed on a stream that ended: resume that stream instead.
        const replayId = !Array.isArray(message) && isJSONRPCRequest(message) ? message.id : undefined;
        this.openGetStream(options.resumptionToken, replayId).catch((e) => this.onerror?.(e as Error));
        return;
      }
      const body = JSON.stringify(message);
      const res = await this.exchange(
        "POST",
        body,
        { "content-type": "application/json", accept: "application/json, text/event-stream" },
        // a tool call may not be sent twice (it may move money): never repeated, whatever the socket did
        hasToolCall(message),
      );
      const sessionId = res.headers["mcp-session-id"];
      if (typeof sessionId === "string" && sessionId !== "") this._sessionId = sessionId;
      if (!ok(res)) {
        const text = await readText(res).catch(() => null);
        throw new StreamableHTTPError(res.statusCode ?? -1, `Error POSTing to endpoint: ${text}`);
      }
      if (res.statusCode === 202) {
        res.resume();
        if (!Array.isArray(message) && isInitializedNotification(message)) {
          this.openGetStream(undefined, undefined).catch((e) => this.onerror?.(e as Error));
        }
        return;
      }
      const messages = Array.isArray(message) ? message : [message];
      if (!messages.some((m) => "method" in m && "id" in m && m.id !== undefined)) {
        res.resume();
        return;
      }
      const type = mediaType(res.headers["content-type"]);
      if (type === "text/event-stream") {
        this.readSse(res, false, undefined);
      } else if (type === "application/json") {
        const data = JSON.parse(await readText(res)) as unknown;
        const parsed = Array.isArray(data)
          ? data.map((m) => JSONRPCMessageSchema.parse(m))
          : [JSONRPCMessageSchema.parse(data)];
        for (const m of parsed) this.onmessage?.(m);
      } else {
        res.resume();
        throw new StreamableHTTPError(-1, `Unexpected content type: ${res.headers["content-type"]}`);
      }
    } catch (e) {
      this.onerror?.(e as Error);
      throw e;
    }
  }

  /** End the upstream session (HTTP DELETE); a server that does not allow it answers 405, which is fine. */
  async terminateSession(): Promise<void> {
    if (this._sessionId === undefined) return;
    try {
      const res = await this.exchange("DELETE", undefined, {});
      res.resume();
      if (!ok(res) && res.statusCode !== 405) {
        throw new StreamableHTTPError(
          res.statusCode ?? -1,
          `Failed to terminate session: ${res.statusMessage ?? res.statusCode}`,
        );
      }
      this._sessionId = undefined;
    } catch (e) {
      this.onerror?.(e as Error);
      throw e;
    }
  }

  /**
   * The standalone GET stream (or a resumed one, with `Last-Event-ID`). Answers 405 when the server offers
   * none. `replayId`: the id of the request whose answer a resumed POST stream still owes.
   */
  private async openGetStream(lastEventId: string | undefined, replayId: string | number | undefined) {
    const res = await this.exchange("GET", undefined, {
      accept: "text/event-stream",
      ...(lastEventId === undefined ? {} : { "last-event-id": lastEventId }),
    });
    if (!ok(res)) {
      res.resume();
      if (res.statusCode === 405) return;
      throw new StreamableHTTPError(
        res.statusCode ?? -1,
        `Failed to open SSE stream: ${res.statusMessage ?? res.statusCode}`,
      );
    }
    this.readSse(res, true, replayId);
  }

  /** Resume a stream after `attempt` failed attempts, as the SDK transport does (its delays and retries). */
  private reconnect(lastEventId: string | undefined, replayId: string | number | undefined, attempt: number) {
    if (this.closed) return;
    if (attempt >= RECONNECT.maxRetries) {
      this.onerror?.(new Error(`Maximum reconnection attempts (${RECONNECT.maxRetries}) exceeded.`));
      return;
    }
    const delay =
      this.serverRetryMs ?? Math.min(RECONNECT.initialMs * RECONNECT.grow ** attempt, RECONNECT.maxMs);
    this.reconnectTimer = setTimeout(() => {
      this.openGetStream(lastEventId, replayId).catch((e) => {
        this.onerror?.(
          new Error(`Failed to reconnect SSE stream: ${e instanceof Error ? e.message : String(e)}`),
        );
        this.reconnect(lastEventId, replayId, attempt + 1);
      });
    }, delay);
  }

  private deliver(m: JSONRPCMessage): void {
    try {
      this.onmessage?.(m);
    } catch (e) {
      this.onerror?.(e as Error);
    }
  }

  /** Hand each message of an SSE body to the client; resume the stream if it ends before its answer. */
  private readSse(res: IncomingMessage, reconnectable: boolean, replayId: string | number | undefined) {
    let lastEventId: string | undefined;
    let answered = false;
    const parser = sseParser(
      (e) => {
        if (e.id !== undefined) lastEventId = e.id;
        if (e.data === "" || (e.event !== undefined && e.event !== "message")) return;
        try {
          // Not parsed with JSONRPCMessageSchema as the SDK transport does (17 µs a message here): the client's
          // protocol checks each message's shape with the SDK's own guards, and drops one that fits none
          // through onerror, as a message the schema refused is dropped here.
          const m = JSON.parse(e.data) as JSONRPCMessage;
          if (isJSONRPCResultResponse(m)) {
            answered = true;
            if (replayId !== undefined) m.id = replayId;
          }
          // One message per microtask, in order, as a reader of a stream hands them over: the SDK runs a
          // notification's handler a microtask after it arrives, so a progress notification and the answer
          // that follows it in one chunk would otherwise find the request already answered.
          this.delivered = this.delivered.then(() => this.deliver(m));
        } catch (error) {
          this.onerror?.(error as Error);
        }
      },
      (ms) => {
        this.serverRetryMs = ms;
      },
    );
    res.setEncoding("utf8");
    res.on("data", parser);
    const ended = (error: Error | undefined) => {
      if (error !== undefined) this.onerror?.(new Error(`SSE stream disconnected: ${error.message}`));
      if ((reconnectable || lastEventId !== undefined) && !answered && !this.closed) {
        this.reconnect(lastEventId, replayId, 0);
      }
    };
    res.once("end", () => ended(undefined));
    res.once("error", (e) => ended(e));
    res.once("aborted", () => ended(new Error("aborted")));
  }

  /**
   * One request; resolves with its response (headers read, body not). `once`: never sent again, not even when a
   * kept-alive socket turns out to have been closed as it went out (the upstream may have read it).
   */
  private exchange(
    method: "POST" | "GET" | "DELETE",
    body: string | undefined,
    headers: Record<string, string>,
    once = false,
  ): Promise<IncomingMessage> {
    if (this.closed) return Promise.reject(new Error("the transport is closed"));
    const all: Record<string, string | number> = { ...this.options.headers(), ...headers };
    if (this._sessionId !== undefined) all["mcp-session-id"] = this._sessionId;
    if (this.protocolVersion !== undefined) all["mcp-protocol-version"] = this.protocolVersion;
    if (body !== undefined) all["content-length"] = Buffer.byteLength(body);
    return new Promise((resolve, reject) => {
      const req = this.request(this.url, { method, headers: all, agent: this.options.agent });
      this.open.add(req);
      req.once("close", () => this.open.delete(req));
      req.once("response", resolve);
      req.once("error", (e: NodeJS.ErrnoException) => {
        // A kept-alive socket the server closed as this request went out: most likely unread, so a request that
        // may be repeated is sent again, once. (Idle sockets close first on our side: keepAliveAgent's timeout.)
        if (!once && req.reusedSocket && e.code === "ECONNRESET") {
          this.exchange(method, body, headers, true).then(resolve, reject);
        } else {
          reject(e);
        }
      });
      req.end(body);
    });
  }
}

function hasToolCall(message: JSONRPCMessage | JSONRPCMessage[]): boolean {
  return (Array.isArray(message) ? message : [message]).some(
    (m) => "method" in m && m.method === "tools/call",
  );
}

function ok(res: IncomingMessage): boolean {
  const s = res.statusCode ?? 0;
  return s >= 200 && s < 300;
}

function mediaType(header: string | undefined): string {
  return (header ?? "").split(";")[0]!.trim().toLowerCase();
}

async function readText(res: IncomingMessage): Promise<string> {
  res.setEncoding("utf8");
  let text = "";
  for await (const chunk of res) text += chunk as string;
  return text;
}

/**
 * A parser for `text/event-stream` (the WHATWG rules: `\n`, `\r\n` or `\r` line ends, `:` comments, `data`
 * lines joined with `\n`, `id`, `event`, `retry`), fed decoded chunks; calls `onEvent` at each blank line.
 *
 * @example
 * const feed = sseParser((e) => console.log(e.data), () => {});
 * feed("data: {}\n\n");
 */
export function sseParser(
  onEvent: (e: SseEvent) => void,
  onRetry: (ms: number) => void,
): (chunk: string) => void {
  let pending = "";
  let data: string[] = [];
  let event: string | undefined;
  let id: string | undefined;
  /** A chunk ended on `\r`: a `\n` opening the next one belongs to that line end. */
  let skipLf = false;
  const line = (text: string) => {
    if (text === "") {
      if (data.length > 0 || id !== undefined || event !== undefined) {
        onEvent({ id, event, data: data.join("\n") });
      }
      data = [];
      event = undefined;
      id = undefined;
      return;
    }
    if (text.charCodeAt(0) === 58) return; // ":" comment
    const colon = text.indexOf(":");
    const field = colon === -1 ? text : text.slice(0, colon);
    let value = colon === -1 ? "" : text.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    if (field === "data") data.push(value);
    else if (field === "event") event = value;
    else if (field === "id") {
      if (!value.includes("\u0000")) id = value;
    } else if (field === "retry" && /^\d+$/.test(value)) onRetry(Number(value));
  };
  return (chunk) => {
    let text = pending + chunk;
    pending = "";
    if (skipLf && text.charCodeAt(0) === 10) text = text.slice(1);
    skipLf = false;
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      line(text.slice(start, i));
      if (c === 13) {
        if (i + 1 === text.length) skipLf = true;
        else if (text.charCodeAt(i + 1) === 10) i++;
      }
      start = i + 1;
    }
    pending = text.slice(start);
  };
}
