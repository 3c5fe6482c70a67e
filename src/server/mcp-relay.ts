/**
 * Server-to-client traffic through the MCP gateway: an upstream's progress, log messages, and sampling and
 * elicitation requests go back to the session of the user whose call caused them, and to no other.
 *
 * How a message finds its session: each upstream call runs inside an {@link AsyncLocalStorage} scope holding
 * that call's {@link CallRelay} (built by the gateway for the calling session). The upstream client reads a
 * call's answer stream (Streamable HTTP: the SSE body of the call's POST) in the async context the call was
 * sent from, so a message the upstream sends on it reaches the client's handlers inside that call's scope.
 * The upstream connection itself (its standalone GET stream, a stdio process's pipe) is opened outside any
 * scope: what arrives on the shared connection's own streams belongs to no call, and a request arriving there
 * is refused, never handed to some session. A session's own connection to an HTTP upstream (upstreams.ts) is
 * that session's: what its GET stream brings while exactly one of the session's calls runs on it is that
 * call's (an upstream that sends a request without relating it to the call's request, as the SDK's
 * `server.createMessage()` does by default), and is refused otherwise. Progress is matched by token instead: the SDK gives each upstream call a token of its own (its
 * request id on that connection), and the relay answers the caller with the caller's token.
 *
 * How it reaches the client: the gateway answers calls with a JSON body (`enableJsonResponse`), which cannot
 * carry anything but the answer, so relayed messages are sent on the session's standalone GET stream (the
 * official clients open it right after `initialize`). Progress carries the caller's token and a request is
 * answered by its id, so clients match them to the call either way. A sampling or elicitation request waits a
 * moment for that stream to be open and is refused to the upstream when the client has none.
 *
 * This module owns the relay's `AsyncLocalStorage` (the run context's is in `context/run.ts`).
 */
import { AsyncLocalStorage } from "node:async_hooks";
import type { ServerResponse } from "node:http";
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import type { Server } from "@modelcontextprotocol/sdk/server/index.js";
import {
  type ClientCapabilities,
  CreateMessageRequestSchema,
  type CreateMessageResult,
  ElicitRequestSchema,
  type ElicitResult,
  ElicitResultSchema,
  ErrorCode,
  type LoggingMessageNotification,
  LoggingMessageNotificationSchema,
  McpError,
  type Progress,
  type ProgressToken,
} from "@modelcontextprotocol/sdk/types.js";
import type { RunContext } from "../context/run.js";
import type { Governor } from "../govern/governor.js";
import { type OutputRedaction, redactOutput } from "../policy/output.js";
import { recordSessionEvent } from "./mcp-audit.js";

/** What the gateway's upstream clients declare: they accept sampling and (form) elicitation, to relay them. */
export const UPSTREAM_CLIENT_CAPABILITIES: ClientCapabilities = { sampling: {}, elicitation: { form: {} } };

/** How long a sampling or elicitation request waits for the user's client to have its GET stream open. */
const STREAM_WAIT_MS = 2_000;

/** Where an upstream's traffic during one tools/call goes: the calling user's session. */
export interface CallRelay {
  /** Upstream progress for the call; absent when the caller sent no progress token. */
  readonly progress?: (progress: Progress) => void;
  log(params: LoggingMessageNotification["params"]): void;
  /** A `sampling/createMessage` or `elicitation/create` of `upstream`, put to the user's client. */
  ask(
    upstream: string,
    request: { method: "sampling/createMessage" | "elicitation/create"; params: Record<string, unknown> },
    signal: AbortSignal,
  ): Promise<CreateMessageResult | ElicitResult>;
}

const scope = new AsyncLocalStorage<CallRelay>();

/**
 * Run an upstream call with its relay in scope (without one, outside any call's scope).
 *
 * @example
 * await relaying(relay, () => client.callTool({ name, arguments: args }));
 */
export function relaying<T>(relay: CallRelay | undefined, fn: () => Promise<T>): Promise<T> {
  return relay === undefined ? scope.exit(fn) : scope.run(relay, fn);
}

/**
 * Run `fn` outside any call's scope: for opening an upstream connection, whose own streams belong to no call.
 *
 * @example
 * this.connecting ??= outsideCalls(() => open());
 */
export function outsideCalls<T>(fn: () => T): T {
  return scope.exit(fn);
}

/**
 * Install the relay's handlers on an upstream client: log messages go to the calling session (dropped when no
 * call caused them); sampling and elicitation requests go to the calling session's client, or are refused.
 *
 * @example
 * relayHandlers(client, "crm", (method) => gov.recordAdmin(`… ${method} refused`, {}));
 */
export function relayHandlers(
  client: Client,
  upstream: string,
  refused: (method: string) => void = () => {},
  /**
   * The call a message that arrived outside every call's scope belongs to, if that can be known: on a
   * session's own connection (upstreams.ts), the one call of that session running on it.
   */
  unscoped: () => CallRelay | undefined = () => undefined,
): void {
  const current = () => scope.getStore() ?? unscoped();
  client.setNotificationHandler(LoggingMessageNotificationSchema, async (n) => {
    current()?.log(n.params);
  });
  const ask = (
    method: "sampling/createMessage" | "elicitation/create",
    params: Record<string, unknown>,
    signal: AbortSignal,
  ) => {
    const relay = current();
    if (relay === undefined) {
      refused(method);
      throw new McpError(
        ErrorCode.InvalidRequest,
        `onbehalf relays ${method} only during a user's tools/call of this server; none is running that caused it`,
      );
    }
    return relay.ask(upstream, { method, params }, signal);
  };
  client.setRequestHandler(
    CreateMessageRequestSchema,
    async (req, extra) =>
      (await ask("sampling/createMessage", req.params, extra.signal)) as CreateMessageResult,
  );
  client.setRequestHandler(
    ElicitRequestSchema,
    async (req, extra) => (await ask("elicitation/create", req.params, extra.signal)) as ElicitResult,
  );
}

/**
 * The standalone GET streams a session's client holds open: where relayed messages go.
 *
 * @example
 * if (req.method === "GET") session.streams.watch(reply.raw);
 */
export class ClientStreams {
  private open = 0;
  private waiters = new Set<() => void>();

  /** Count `res` as open until it closes. */
  watch(res: ServerResponse): void {
    this.open++;
    for (const w of this.waiters) w();
    this.waiters.clear();
    res.once("close", () => {
      this.open--;
    });
  }

  /** Whether a stream is open, waiting up to `ms` for one. */
  async ready(ms: number): Promise<boolean> {
    if (this.open > 0) return true;
    let wake = () => {};
    const opened = new Promise<void>((resolve) => {
      wake = resolve;
      this.waiters.add(resolve);
    });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
    });
    await Promise.race([opened, timeout]);
    clearTimeout(timer);
    this.waiters.delete(wake);
    return this.open > 0;
  }
}

/** The session a relay answers to. */
export interface RelaySession {
  readonly server: Server;
  readonly sessionId: () => string | undefined;
  readonly streams: ClientStreams;
}

/** The call a relay is for. */
export interface RelayedCall {
  readonly run: RunContext;
  /** The tool's exposed name. */
  readonly tool: string;
  /** The call's audit call id. */
  readonly callId: string;
  /** The caller's `_meta.progressToken`, if it sent one. */
  readonly progressToken: ProgressToken | undefined;
  /** What policy does to the call's output (`outputPolicyOf`): it applies to what is relayed too. */
  readonly output: OutputRedaction | "block" | null;
}

/**
 * The relay of one call to the session that made it. Sampling and elicitation are audited (an `admin` record
 * carrying the user, naming the upstream that asked and the session, with `call` the call's id); an
 * elicitation's answer is recorded as the user's (its action and the names of the fields answered, not their
 * values).
 *
 * What the upstream sends is output of the call, so the call's output policy applies to it: under `block`
 * progress goes without its message and logs are dropped; under redaction a progress message and a log's
 * `data` are redacted (what the paths cannot reach is withheld); under either, sampling and elicitation
 * requests are refused, as their text cannot be checked.
 *
 * @example
 * const relay = sessionRelay(ctx.gov, session, { run, tool: name, callId, progressToken });
 */
export function sessionRelay(gov: Governor, session: RelaySession, call: RelayedCall): CallRelay {
  const { server } = session;
  const token = call.progressToken;
  const output = call.output;
  /** A relayed value under the call's output policy; undefined when it is not to be sent at all. */
  const screened = (value: unknown): unknown =>
    output === null ? value : output === "block" ? undefined : redactOutput(value, output);
  const audit = (
    upstream: string,
    method: string,
    ok: boolean,
    reason: string,
    more: Record<string, unknown>,
  ) =>
    recordSessionEvent(gov, call.run, {
      tool: call.tool,
      args: { upstream, method, session: session.sessionId() ?? null, call: call.callId, ...more },
      ok,
      reason,
    });
  return {
    ...(token === undefined
      ? {}
      : {
          progress: ({ message, ...p }: Progress) => {
            const shown = message === undefined ? undefined : screened(message);
            void server
              .notification({
                method: "notifications/progress",
                params: {
                  ...p,
                  ...(typeof shown === "string" ? { message: shown } : {}),
                  progressToken: token,
                },
              })
              .catch(() => {});
          },
        }),
    log(params) {
      const data = screened(params.data);
      if (data === undefined) return;
      void server.sendLoggingMessage({ ...params, data }, session.sessionId()).catch(() => {});
    },
    async ask(upstream, request, signal) {
      const who = `${call.run.principal.user}'s client`;
      const what = request.method === "sampling/createMessage" ? "sampling" : "elicitation";
      const refuse = (why: string): never => {
        audit(upstream, request.method, false, `upstream ${upstream} asked ${who} for ${what}: ${why}`, {});
        throw new McpError(ErrorCode.InvalidRequest, `the user's MCP client ${why}`);
      };
      if (output !== null) {
        const how = output === "block" ? "blocks" : "redacts";
        audit(
          upstream,
          request.method,
          false,
          `upstream ${upstream} asked ${who} for ${what}: refused, as policy ${how} the output of ${call.tool}`,
          {},
        );
        throw new McpError(
          ErrorCode.InvalidRequest,
          `onbehalf does not relay ${what} requests of ${call.tool}: policy ${how} its output, and cannot check what a request says`,
        );
      }
      if (!accepts(server.getClientCapabilities(), request)) refuse(`declared no ${what} capability`);
      if (!(await session.streams.ready(STREAM_WAIT_MS)))
        refuse("has no open stream (GET /mcp) to receive server requests");
      let result: CreateMessageResult | ElicitResult;
      try {
        result =
          request.method === "sampling/createMessage"
            ? await server.createMessage(request.params as never, { signal })
            : await server.request(
                { method: "elicitation/create", params: request.params as never },
                ElicitResultSchema,
                { signal },
              );
      } catch (e) {
        audit(upstream, request.method, false, `upstream ${upstream} asked ${who} for ${what}: failed`, {
          error: (e as Error).message.slice(0, 300),
        });
        throw e;
      }
      if (request.method === "sampling/createMessage") {
        const r = result as CreateMessageResult;
        audit(upstream, request.method, true, `upstream ${upstream} asked ${who} for sampling: answered`, {
          model: r.model,
        });
      } else {
        const r = result as ElicitResult;
        audit(
          upstream,
          request.method,
          true,
          `upstream ${upstream} asked ${who} for elicitation: the user answered ${r.action}`,
          { action: r.action, fields: Object.keys(r.content ?? {}).sort() },
        );
      }
      return result;
    },
  };
}

/** Whether the client declared what the request needs (an empty `elicitation` object means form mode). */
function accepts(
  caps: ClientCapabilities | undefined,
  request: { method: string; params: Record<string, unknown> },
): boolean {
  if (request.method === "sampling/createMessage") return caps?.sampling !== undefined;
  const e = caps?.elicitation;
  if (e === undefined) return false;
  if (request.params["mode"] === "url") return e.url !== undefined;
  return e.form !== undefined || Object.keys(e).length === 0;
}
