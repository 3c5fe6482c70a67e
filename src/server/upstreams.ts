/**
 * The MCP servers behind the gateway: one shared client connection per upstream (streamable HTTP or stdio),
 * its tools listed once and refreshed when it says they changed, calls with a per-upstream timeout, and a
 * connection that died (a crashed stdio process, a closed HTTP session) reopened on the next use.
 *
 * A gateway session's tool calls to an HTTP upstream go on a connection of that session's own, opened on its
 * first call there and closed (its upstream session ended) when the gateway session ends: the upstream sees one
 * session per user session, every request on it (its GET stream included) carries that user's on-behalf-of
 * token, and whatever it sends on the connection's own streams (log messages, sampling and elicitation
 * requests not tied to the call's request) can only be that session's (mcp-relay.ts). A stdio upstream is one
 * process, shared.
 *
 * Each HTTP request to an upstream carries the authorization its `auth` config asks for: an on-behalf-of
 * token minted for the human of the call being made (read from the run context the call runs in), a static
 * header, or nothing. The user's own token is never among them.
 */
import type { Agent } from "node:http";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import type { RequestOptions } from "@modelcontextprotocol/sdk/shared/protocol.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import {
  type CallToolResult,
  type ServerCapabilities,
  type Tool,
  ToolListChangedNotificationSchema,
} from "@modelcontextprotocol/sdk/types.js";
import { exposedPrefix, type UpstreamConfig } from "../config/server.js";
import { type RunContext, tryCurrentRun } from "../context/run.js";
import { OnbehalfError } from "../errors.js";
import {
  type CallRelay,
  outsideCalls,
  relayHandlers,
  relaying,
  UPSTREAM_CLIENT_CAPABILITIES,
} from "./mcp-relay.js";
import { secondsSince } from "./metrics.js";
import type { OboMinter } from "./obo.js";
import { HttpClientTransport, keepAliveAgent } from "./upstream-http.js";

/** At least this long to connect (and, for stdio, start) an upstream. */
const CONNECT_TIMEOUT_MS = 10_000;

/** How an upstream tool call ended: answered, answered with an error result, out of time, or failed. */
export type UpstreamOutcome = "ok" | "tool_error" | "timeout" | "failed";

/** An upstream tool as the gateway exposes it. */
export interface ExposedTool {
  /**
   * The name clients see: `<prefix or upstream name><separator><tool>`, e.g. `crm.get_customer`; the tool's own
   * name with `prefix: ""`.
   */
  readonly name: string;
  readonly upstream: Upstream;
  /** The upstream's own name for it. */
  readonly original: string;
  readonly tool: Tool;
}

/** What a gateway call adds to an upstream call: the caller's cancellation, and where server traffic goes. */
export interface UpstreamCallOptions {
  /** Aborted when the client cancels its call: the upstream request is cancelled too. */
  readonly signal?: AbortSignal;
  /** The calling session's relay (mcp-relay.ts): the upstream's progress, logs and requests for this call. */
  readonly relay?: CallRelay;
  /** The calling gateway session: an HTTP upstream is called on that session's own connection. */
  readonly session?: string;
}

/** A gateway session's own connection to an HTTP upstream. */
interface SessionLink {
  client: Client | undefined;
  transport: HttpClientTransport | undefined;
  connecting: Promise<Client> | undefined;
  /** The user the connection is for: the on-behalf-of token of requests sent outside a call (its GET stream). */
  run: RunContext | undefined;
  /** The session's calls running on it now, with their relays. */
  readonly calls: Set<CallRelay>;
}

export class Upstream {
  private client: Client | undefined;
  private connecting: Promise<Client> | undefined;
  private listed: ExposedTool[] | undefined;
  private retryAt = 0;
  /** Gateway sessions' own connections, by session id (HTTP upstreams). */
  private readonly links = new Map<string, SessionLink>();
  /** The keep-alive connections to an HTTP upstream, shared by its MCP connections (upstream-http.ts). */
  private agent: Agent | undefined;
  /** Run on each new connection, before it opens (resources and prompts: see mcp-resources.ts). */
  private readonly connectHooks: ((client: Client) => void)[] = [];

  constructor(
    readonly config: UpstreamConfig,
    private readonly obo: OboMinter,
    private readonly onToolsChanged: () => void,
    /** Told of each tool call: this upstream's name, how it ended, how long it took in seconds (metrics). */
    private readonly onCall: (upstream: string, outcome: UpstreamOutcome, seconds: number) => void = () => {},
    /** Told of a sampling or elicitation request this upstream sent while none of its calls was running. */
    private readonly onUnrelatedRequest: (upstream: string, method: string) => void = () => {},
  ) {}

  get name(): string {
    return this.config.name;
  }

  /** What its exposed names start with: `<prefix or name><separator>`, or nothing with `prefix: ""`. */
  get exposedPrefix(): string {
    return exposedPrefix(this.config);
  }

  /** The upstream's tools under their exposed names; an upstream that cannot be reached lists none. */
  async tools(): Promise<ExposedTool[]> {
    if (this.listed !== undefined) return this.listed;
    const client = await this.connect();
    const tools: Tool[] = [];
    let cursor: string | undefined;
    do {
      const page = await client.listTools(cursor === undefined ? {} : { cursor }, {
        timeout: this.config.timeout_ms,
      });
      tools.push(...page.tools);
      cursor = page.nextCursor;
    } while (cursor !== undefined && tools.length < 10_000);
    this.listed = tools.map((tool) => ({
      name: `${this.exposedPrefix}${tool.name}`,
      upstream: this,
      original: tool.name,
      tool,
    }));
    return this.listed;
  }

  /** Call a tool; throws OnbehalfError with a message fit for the model when the upstream fails. */
  async call(
    original: string,
    args: Record<string, unknown>,
    options: UpstreamCallOptions = {},
  ): Promise<CallToolResult> {
    const started = process.hrtime.bigint();
    const seconds = () => secondsSince(started);
    const { signal, relay, session } = options;
    const link = session !== undefined && this.config.transport !== "stdio" ? this.link(session) : undefined;
    let client: Client;
    try {
      client = link === undefined ? await this.connect() : await this.connectLink(link);
    } catch (e) {
      this.onCall(this.name, "failed", seconds());
      throw e;
    }
    if (relay !== undefined) link?.calls.add(relay);
    try {
      const progress = relay?.progress;
      const result = await relaying(relay, () =>
        client.callTool({ name: original, arguments: args }, undefined, {
          timeout: this.config.timeout_ms,
          maxTotalTimeout: this.config.timeout_ms,
          ...(signal === undefined ? {} : { signal }),
          // The SDK sends a progress token of its own (this request's id on this connection), never the caller's.
          ...(progress === undefined ? {} : { onprogress: progress, resetTimeoutOnProgress: true }),
        }),
      );
      if (!Array.isArray((result as CallToolResult).content))
        throw new Error("the upstream's answer has no content list");
      this.onCall(this.name, (result as CallToolResult).isError === true ? "tool_error" : "ok", seconds());
      return result as CallToolResult;
    } catch (e) {
      const message = (e as Error).message ?? String(e);
      const timedOut = /timed? ?out/i.test(message);
      this.onCall(this.name, timedOut ? "timeout" : "failed", seconds());
      if (timedOut) {
        throw new OnbehalfError(
          "ERR_UPSTREAM_FAILED",
          `upstream ${this.name} did not answer within ${this.config.timeout_ms} ms`,
        );
      }
      if (isConnectionError(e)) {
        if (link === undefined) this.drop();
        else dropLink(link);
      }
      throw new OnbehalfError("ERR_UPSTREAM_FAILED", `upstream ${this.name} failed: ${message}`, {
        cause: e,
      });
    } finally {
      if (relay !== undefined) link?.calls.delete(relay);
    }
  }

  /** End a gateway session's own connection (and its upstream session): the gateway session ended. */
  async endSession(session: string): Promise<void> {
    const link = this.links.get(session);
    if (link === undefined) return;
    this.links.delete(session);
    await link.connecting?.catch(() => {});
    await closeLink(link);
  }

  // -- hooks for what is relayed besides tools (mcp-resources.ts) ------------------------------------------

  /** Run `hook` on each connection this upstream opens from now on (to set notification handlers). */
  onConnect(hook: (client: Client) => void): void {
    this.connectHooks.push(hook);
  }

  /** What the upstream said it can do when it connected; undefined when it cannot be reached. */
  async capabilities(): Promise<ServerCapabilities | undefined> {
    return (await this.connect()).getServerCapabilities();
  }

  /**
   * One request other than a tool call (`resources/read`, `prompts/get`, a list), within the upstream's
   * timeout; throws OnbehalfError with a message fit for the model when the upstream fails.
   */
  async request<T>(what: string, f: (client: Client, options: RequestOptions) => Promise<T>): Promise<T> {
    const client = await this.connect();
    try {
      return await f(client, { timeout: this.config.timeout_ms, maxTotalTimeout: this.config.timeout_ms });
    } catch (e) {
      const message = (e as Error).message ?? String(e);
      if (/timed? ?out/i.test(message)) {
        throw new OnbehalfError(
          "ERR_UPSTREAM_FAILED",
          `upstream ${this.name} did not answer ${what} within ${this.config.timeout_ms} ms`,
        );
      }
      if (isConnectionError(e)) this.drop();
      throw new OnbehalfError("ERR_UPSTREAM_FAILED", `upstream ${this.name} failed ${what}: ${message}`, {
        cause: e,
      });
    }
  }

  async close(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    await Promise.allSettled([client?.close(), ...[...this.links.keys()].map((s) => this.endSession(s))]);
    this.agent?.destroy();
    this.agent = undefined;
  }

  private link(session: string): SessionLink {
    let link = this.links.get(session);
    if (link === undefined) {
      link = {
        client: undefined,
        transport: undefined,
        connecting: undefined,
        run: undefined,
        calls: new Set(),
      };
      this.links.set(session, link);
    }
    return link;
  }

  /** A session's own connection, opened on its first call (outside any call's relay scope, as the shared one). */
  private connectLink(link: SessionLink): Promise<Client> {
    if (link.client !== undefined) return Promise.resolve(link.client);
    link.run ??= tryCurrentRun();
    link.connecting ??= outsideCalls(async () => {
      const client = new Client(
        { name: "onbehalf-gateway", version: "0.1.0" },
        { capabilities: UPSTREAM_CLIENT_CAPABILITIES },
      );
      // What arrives outside every call's scope is the session's one running call's, else nobody's.
      relayHandlers(
        client,
        this.name,
        (method) => this.onUnrelatedRequest(this.name, method),
        () => (link.calls.size === 1 ? link.calls.values().next().value : undefined),
      );
      const transport = this.httpTransport(() => link.run);
      transport.onclose = () => {
        if (link.client === client) dropLink(link);
      };
      try {
        await client.connect(transport, { timeout: Math.max(this.config.timeout_ms, CONNECT_TIMEOUT_MS) });
      } catch (e) {
        await client.close().catch(() => {});
        throw new OnbehalfError(
          "ERR_UPSTREAM_FAILED",
          `upstream ${this.name} is unreachable: ${(e as Error).message}`,
          { cause: e },
        );
      }
      link.client = client;
      link.transport = transport;
      return client;
    }).finally(() => {
      link.connecting = undefined;
    });
    return link.connecting;
  }

  private connect(): Promise<Client> {
    if (this.client !== undefined) return Promise.resolve(this.client);
    if (Date.now() < this.retryAt) {
      return Promise.reject(
        new OnbehalfError("ERR_UPSTREAM_FAILED", `upstream ${this.name} is unreachable; retrying shortly`),
      );
    }
    // Opened outside any call's relay scope: what arrives on the connection's own streams belongs to no call.
    this.connecting ??= outsideCalls(async () => {
      const client = new Client(
        { name: "onbehalf-gateway", version: "0.1.0" },
        { capabilities: UPSTREAM_CLIENT_CAPABILITIES },
      );
      relayHandlers(client, this.name, (method) => this.onUnrelatedRequest(this.name, method));
      const transport = this.transport();
      // Only this connection's own end drops it: a dead process's transport may report its close after a new
      // connection replaced it, and must not take the new one down with it.
      transport.onclose = () => {
        if (this.client === client || this.client === undefined) this.drop();
      };
      client.setNotificationHandler(ToolListChangedNotificationSchema, async () => {
        this.listed = undefined;
        this.onToolsChanged();
      });
      for (const hook of this.connectHooks) hook(client);
      try {
        // Starting a server (a stdio process, a cold HTTP one) may take longer than answering a call does.
        await client.connect(transport, { timeout: Math.max(this.config.timeout_ms, CONNECT_TIMEOUT_MS) });
      } catch (e) {
        this.retryAt = Date.now() + 1_000;
        await client.close().catch(() => {});
        throw new OnbehalfError(
          "ERR_UPSTREAM_FAILED",
          `upstream ${this.name} is unreachable: ${(e as Error).message}`,
          { cause: e },
        );
      }
      this.client = client;
      return client;
    }).finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  /** Forget a dead connection; the next use opens a new one (a stdio server is started again). */
  private drop(): void {
    const client = this.client;
    this.client = undefined;
    this.listed = undefined;
    void client?.close().catch(() => {});
  }

  private transport(): Transport {
    const c = this.config;
    if (c.transport === "stdio") {
      return new StdioClientTransport({ command: c.command ?? "", args: c.args, stderr: "ignore" });
    }
    return this.httpTransport(() => undefined);
  }

  /** A Streamable HTTP connection; `owner` is the run whose user it is for when no call is running (a link's). */
  private httpTransport(owner: () => RunContext | undefined): HttpClientTransport {
    const url = new URL(this.config.url ?? "");
    this.agent ??= keepAliveAgent(url);
    return new HttpClientTransport(url, {
      agent: this.agent,
      headers: () => {
        const auth = this.config.auth;
        if (auth.type === "obo") {
          const run = tryCurrentRun() ?? owner();
          const token =
            run === undefined ? this.obo.forGateway(auth.audience) : this.obo.forRun(run, auth.audience);
          return { authorization: `Bearer ${token}` };
        }
        if (auth.type === "static") return { [auth.header.toLowerCase()]: auth.value };
        return {};
      },
    });
  }
}

/** Forget a session's dead connection; its next call opens a new one. */
function dropLink(link: SessionLink): void {
  const client = link.client;
  link.client = undefined;
  link.transport = undefined;
  void client?.close().catch(() => {});
}

/** Close a session's connection, ending its upstream session first (an HTTP DELETE) when it has one. */
async function closeLink(link: SessionLink): Promise<void> {
  const { client, transport } = link;
  link.client = undefined;
  link.transport = undefined;
  await transport?.terminateSession().catch(() => {});
  await client?.close().catch(() => {});
}

/** The requests in flight under each shared signal; one listener per shared signal aborts them all. */
const inFlight = new WeakMap<AbortSignal, Set<AbortController>>();

function childOf(parent: AbortSignal): { signal: AbortSignal; release: () => void } {
  const own = new AbortController();
  if (parent.aborted) {
    own.abort(parent.reason);
    return { signal: own.signal, release: () => {} };
  }
  let children = inFlight.get(parent);
  if (children === undefined) {
    const set = new Set<AbortController>();
    children = set;
    inFlight.set(parent, set);
    parent.addEventListener(
      "abort",
      () => {
        for (const c of set) c.abort(parent.reason);
        set.clear();
      },
      { once: true },
    );
  }
  children.add(own);
  return { signal: own.signal, release: () => void children.delete(own) };
}

/**
 * `fetch` with a signal of its own per request, bridged from the caller's. The SDK passes one long-lived
 * signal to every request of a connection, and undici only drops its listener on that signal when the request
 * is garbage-collected: under steady traffic thousands pile up (each past 1,500 printing a warning with a stack
 * trace). Here the shared signal gets one listener in all, and a request leaves the set of those it aborts when
 * its response body ends or it fails.
 */
export async function fetchWithOwnSignal(url: string | URL, init: RequestInit = {}): Promise<Response> {
  const parent = init.signal;
  if (parent === undefined || parent === null) return fetch(url, init);
  const { signal, release } = childOf(parent);
  try {
    const response = await fetch(url, { ...init, signal });
    if (response.body === null) {
      release();
      return response;
    }
    const body = response.body.pipeThrough(new TransformStream({ flush: release }));
    return new Response(body, {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    });
  } catch (e) {
    release();
    throw e;
  }
}

function isConnectionError(e: unknown): boolean {
  const text = `${(e as Error).message ?? ""} ${String((e as { code?: unknown }).code ?? "")}`;
  return /ECONNREFUSED|ECONNRESET|EPIPE|closed|Not connected|fetch failed|Session not found|404/i.test(text);
}
