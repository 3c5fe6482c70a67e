/**
 * The MCP gateway at `/mcp` (MCP Streamable HTTP, on the official SDK). Each user's agent connects with that
 * user's token; the gateway lists only the upstream tools that user could call, runs every call through the
 * governor (arguments visible to policy), calls the upstream with an on-behalf-of token, redacts the result,
 * and audits with `source: mcp`. A denial is a tool result with `isError: true` and the reason.
 *
 * A session belongs to the user who opened it: another user's token on its session id is refused.
 */
import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AuthInfo } from "@modelcontextprotocol/sdk/server/auth/types.js";
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import {
  CallToolRequestSchema,
  type CallToolResult,
  ErrorCode,
  ListToolsRequestSchema,
  McpError,
  type ServerCapabilities,
  type Tool,
} from "@modelcontextprotocol/sdk/types.js";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { AuditFields } from "../audit/record.js";
import { type RunContext, runContextOf, withContext } from "../context/run.js";
import { newTraceId, traceIdOf } from "../context/trace.js";
import { OnbehalfError } from "../errors.js";
import { type CallAttempt, callInput, outputPolicyOf } from "../govern/pipeline.js";
import { listable } from "../policy/decide.js";
import { McpOutput, mcpText } from "../policy/output.js";
import { hasUnsafeText, unsafeTextMessage } from "../text.js";
import type { ServerContext } from "./context.js";
import { authenticate, type Caller, headerSafe, sendError } from "./http.js";
import { GatewayServerTransport } from "./mcp-inbound.js";
import { ClientStreams, sessionRelay } from "./mcp-relay.js";
import { mcpRelays } from "./mcp-relays.js";
import { transportGuard } from "./mcp-transport-guard.js";
import { createOboMinter } from "./obo.js";
import { noteCall } from "./request-log.js";
import { type ExposedTool, Upstream, type UpstreamCallOptions } from "./upstreams.js";

/** Largest tool result handed back to a client; longer text is cut with a note. */
const MAX_RESULT_BYTES = 1_048_576;

interface Session {
  readonly transport: GatewayServerTransport;
  readonly server: Server;
  readonly user: string;
  readonly tenant: string | null;
  /**
   * The session's trace: its delegation token's, else the initialize request's `traceparent`, else a new one.
   * A request with a `traceparent` of its own is recorded under that one.
   */
  readonly traceId: string;
  /** The client's standalone GET streams: where relayed upstream traffic goes (mcp-relay.ts). */
  readonly streams: ClientStreams;
  /** Epoch ms of its last request: idle sessions are closed. */
  lastUsed: number;
}

export interface GatewayOptions {
  /** The resource identifier tokens must be issued for (RFC 8707): `<public url>/mcp` by default. */
  readonly resource: () => string;
  /** Where the protected resource metadata (RFC 9728) is served. */
  readonly metadataUrl: () => string;
  /** The URL clients reach the server at: `public_url`, else where it listens. */
  readonly publicUrl: () => string;
  /** The address the server is bound to: loopback binds accept loopback `Origin`s by default. */
  readonly boundHost: string;
  /** `server.mcp_allowed_origins`. */
  readonly allowedOrigins: readonly string[] | undefined;
  /** How long a call answered with `ask` waits for an approver before it returns an error naming the approval. */
  readonly approvalWaitMs: number;
  /** Bounds of the sessions kept: overall, per user, and how long one may stay idle. */
  readonly sessions: { readonly max: number; readonly perUser: number; readonly idleMs: number };
}

/**
 * Mount `/mcp` and `/.well-known/oauth-protected-resource` on the control plane.
 *
 * @example
 * await mcpGateway(app, ctx, { resource: () => "https://onbehalf.example.com/mcp", metadataUrl: () => url });
 */
export async function mcpGateway(
  app: FastifyInstance,
  ctx: ServerContext,
  options: GatewayOptions,
): Promise<{ close(): Promise<void> }> {
  const obo = createOboMinter(ctx.key, ctx.issuer);
  /** Open sessions, least recently used first (a session used again moves to the end). */
  const sessions = new Map<string, Session>();
  const bounds = options.sessions;
  /** Close a session the bounds let go of: its transport's close ends it (and its upstream sessions). */
  const letGo = (id: string, s: Session, why: "idle" | "bound" | "user_bound") => {
    sessions.delete(id);
    ctx.pending.evicted("mcp_session", why);
    void s.transport.close().catch(() => {});
    for (const u of upstreams) void u.endSession(id);
  };
  /** Room for one more session of `user`: their least recent goes at their bound, the least recent at the bound. */
  const makeRoom = (user: string, tenant: string | null) => {
    const theirs = [...sessions].filter(([, s]) => s.user === user && s.tenant === tenant);
    if (theirs.length >= bounds.perUser) {
      const [id, s] = theirs[0] as [string, Session];
      letGo(id, s, "user_bound");
    }
    for (const [id, s] of sessions) {
      if (sessions.size < bounds.max) break;
      letGo(id, s, "bound");
    }
  };
  const idleSweep = setInterval(
    () => {
      const before = Date.now() - bounds.idleMs;
      for (const [id, s] of sessions) if (s.lastUsed <= before) letGo(id, s, "idle");
    },
    Math.min(30_000, Math.max(100, bounds.idleMs / 4)),
  );
  idleSweep.unref();
  const upstreamSeconds = ctx.metrics.histogram(
    "onbehalf_upstream_call_duration_seconds",
    "Tool calls the MCP gateway made to its upstreams, by upstream and outcome (ok, tool_error, timeout, failed).",
    ["upstream", "outcome"],
  );
  const upstreams = ctx.gov.config.upstreams.map(
    (config) =>
      new Upstream(
        config,
        obo,
        () => {
          for (const s of sessions.values()) void s.server.sendToolListChanged().catch(() => {});
        },
        (upstream, outcome, seconds) => upstreamSeconds({ upstream, outcome }, seconds),
        (upstream, method) =>
          ctx.gov.recordAdmin(
            `upstream ${upstream} sent ${method} while no call of a user was running: refused, sent to no session`,
            { upstream, method },
            { decision: "deny", reason_code: "error" },
          ),
      ),
  );

  /** Each request's step-up slot, by the run made for it (a refusal for a missing scope fills it in). */
  const stepUps = new WeakMap<RunContext, StepUp>();
  const insufficientScope = (run: RunContext, name: string) => {
    const slot = stepUps.get(run);
    if (slot === undefined) return;
    slot.scopes = stepUpScopes(ctx, run, name);
    slot.what = name.startsWith("resource:") ? "resource" : name.startsWith("prompt:") ? "prompt" : "tool";
  };

  /** Each request's request log note, by the run made for it: the call it decided is named on its line. */
  const notes = new WeakMap<RunContext, (fields: AuditFields) => void>();
  const decided = (run: RunContext, attempt: CallAttempt) => notes.get(run)?.(attempt.fields);

  // Resources and prompts (mcp-relays.ts): decided, audited and redacted as tool calls are.
  const relays = mcpRelays(
    {
      ctx,
      upstreams,
      insufficientScope,
      decided,
      hold: (attempt, run, name, args) =>
        holdForApproval(ctx, attempt, run, name, args, options.approvalWaitMs),
    },
    () => [...sessions.values()].map((s) => s.server),
  );

  // What a session may list follows the policy: when it changes, every session is told to list again.
  const stopWatching = ctx.gov.onPolicyChange(() => {
    for (const s of sessions.values()) void s.server.sendToolListChanged().catch(() => {});
    relays.listsChanged("resources");
    relays.listsChanged("prompts");
  });

  const sighted = sightings(ctx);
  /**
   * The upstream tools the gateway offers. With `expose: declared` (the default) only tools a `tools` entry
   * names: a tool nobody declared is neither listed nor callable (a call is decided as an unknown tool and
   * denied). With `expose: all`, undeclared tools are declared with the upstream's `default_scopes`. A declared
   * tool takes the upstream's description and input schema where its entry gives none.
   */
  const catalog = async (): Promise<Map<string, ExposedTool>> => {
    const offered = new Map<string, ExposedTool>();
    const clashes = new Set<string>();
    const declaredNames = declaredTools(ctx);
    for (const upstream of upstreams) {
      const tools = await upstream.tools().catch(() => [] as ExposedTool[]); // an upstream that is down lists nothing
      for (const t of tools) {
        const declared = declaredNames.has(t.name);
        // An upstream exposed without a prefix that lists a name in another upstream's names (`crm.…`) could
        // take that one's calls: hidden, whether the other lists it or not (it may be down right now).
        const owner = upstream.exposedPrefix === "" ? ownerOf(t.name, upstreams) : undefined;
        sighted(upstream, t, declared, owner);
        if (owner !== undefined) continue;
        if (!declared && upstream.config.expose !== "all") continue;
        const other = offered.get(t.name);
        if (other !== undefined && other.upstream !== upstream) {
          // Two upstreams offer one name (the config refuses prefixes that can meet; this is the last line):
          // neither is offered, rather than the wrong server getting the call.
          offered.delete(t.name);
          clashes.add(t.name);
        }
        if (clashes.has(t.name)) continue;
        if (!declared || ctx.gov.policy.tools.get(t.name)?.inputSchema === undefined) {
          ctx.gov.declare({
            name: t.name,
            ...(t.tool.description === undefined ? {} : { description: t.tool.description }),
            input_schema: t.tool.inputSchema as Record<string, unknown>,
            ...(declared ? {} : { required_scopes: upstream.config.default_scopes }),
          });
        }
        offered.set(t.name, t);
      }
    }
    return offered;
  };

  /** A session ended (DELETE, or closed): forget it and end its own connections to the upstreams. */
  const ended = (id: string) => {
    sessions.delete(id);
    for (const u of upstreams) void u.endSession(id);
  };

  const newSession = (
    caller: Caller,
    traceparent: string | string[] | undefined,
    relayed: ServerCapabilities,
  ): Session => {
    const server = new Server(
      { name: "onbehalf-gateway", version: "0.1.0" },
      // logging: upstream log messages are relayed to the session (mcp-relay.ts), at its `logging/setLevel`.
      { capabilities: { tools: { listChanged: true }, logging: {} } },
    );
    const transport = new GatewayServerTransport({
      sessionIdGenerator: () => randomUUID(),
      // A call's answer as one JSON body, not an SSE stream per request: a plain body costs much less (clients
      // must accept both), and lets a scope step-up answer 403. What an upstream sends during a call (progress,
      // logs, sampling, elicitation) goes on the session's GET stream instead (mcp-relay.ts).
      enableJsonResponse: true,
      onsessioninitialized: (id) => {
        makeRoom(session.user, session.tenant);
        sessions.set(id, session);
      },
      onsessionclosed: (id) => {
        ended(id);
      },
    });
    const session: Session = {
      transport,
      server,
      user: caller.principal.user,
      tenant: caller.principal.tenant,
      traceId: caller.delegation?.traceId ?? traceIdOf(traceparent) ?? newTraceId(),
      streams: new ClientStreams(),
      lastUsed: Date.now(),
    };
    const requestRun = (extra: {
      authInfo?: { extra?: Record<string, unknown> };
      requestInfo?: { headers: Record<string, string | string[] | undefined> };
    }): RunContext => {
      const c = extra.authInfo?.extra?.["caller"] as Caller | undefined;
      if (c === undefined) throw new OnbehalfError("ERR_NO_IDENTITY", "no identity on this MCP request");
      const d = c.delegation;
      const run = runContextOf(c.principal, {
        chain: d?.chain ?? [clientName(server.getClientVersion()?.name)],
        tier: d?.tier ?? "interactive",
        ...(d === null ? {} : { tiers: d.tiers, capabilities: d.capabilities, clients: d.clients }),
        scopes: c.principal.scopes,
        traceId: traceIdOf(extra.requestInfo?.headers["traceparent"]) ?? session.traceId,
      });
      const slot = extra.authInfo?.extra?.["stepUp"] as StepUp | undefined;
      if (slot !== undefined) stepUps.set(run, slot);
      const note = extra.authInfo?.extra?.["note"] as ((fields: AuditFields) => void) | undefined;
      if (note !== undefined) notes.set(run, note);
      return run;
    };
    relays.attach(server, requestRun, relayed);
    server.setRequestHandler(ListToolsRequestSchema, async (_req, extra) => {
      const run = requestRun(extra);
      const tools: Tool[] = [];
      for (const [name, t] of await catalog()) {
        const visible = listable(ctx.gov.policy, callInput(run, name, {}, 0, ctx.gov.now()));
        if (visible) tools.push({ ...t.tool, name });
      }
      return { tools };
    });
    server.setRequestHandler(CallToolRequestSchema, async (req, extra) => {
      const run = requestRun(extra);
      if (hasUnsafeText(req.params.name)) {
        throw new McpError(ErrorCode.InvalidParams, `the tool ${unsafeTextMessage("name")}`);
      }
      const progressToken = req.params._meta?.progressToken;
      return callTool(run, req.params.name, req.params.arguments ?? {}, (tool, attempt) => ({
        signal: extra.signal,
        ...(transport.sessionId === undefined ? {} : { session: transport.sessionId }),
        relay: sessionRelay(
          ctx.gov,
          { server, sessionId: () => transport.sessionId, streams: session.streams },
          { run, tool, callId: attempt.callId, progressToken, output: outputPolicyOf(attempt) },
        ),
      }));
    });
    transport.onclose = () => {
      if (transport.sessionId !== undefined) ended(transport.sessionId);
    };
    return session;
  };

  const callTool = async (
    run: RunContext,
    name: string,
    args: Record<string, unknown>,
    /** The caller's cancellation and the relay of the upstream's traffic back to the calling session. */
    upstreamOptions: (tool: string, attempt: CallAttempt) => UpstreamCallOptions = () => ({}),
  ): Promise<CallToolResult> => {
    const tool = (await catalog()).get(name);
    let attempt = await ctx.gov.begin(run, name, args, { source: "mcp" });
    decided(run, attempt);
    if (attempt.decision.decision === "ask") {
      const held = await holdForApproval(ctx, attempt, run, name, args, options.approvalWaitMs);
      if (typeof held === "string") return errorResult(held);
      attempt = held;
      decided(run, attempt);
    }
    const d = attempt.decision;
    if (d.decision !== "allow") {
      if (d.reason_code === "missing_scope") insufficientScope(run, name);
      return errorResult(`denied (${d.reason_code}): ${d.reason}`);
    }
    // Nothing reaches the upstream before its attempt record has committed (as /v1/check answers).
    try {
      await ctx.gov.auditLog.acknowledged(attempt.seq);
    } catch (e) {
      ctx.gov.finish(attempt, { status: "error", error: `not run: ${(e as Error).message}` });
      return errorResult(`denied (fail_closed): ${(e as Error).message}`);
    }
    if (tool === undefined) {
      ctx.gov.finish(attempt, { status: "error", error: "no upstream offers this tool" });
      return errorResult(`no upstream offers a tool named ${name}`);
    }
    let result: CallToolResult;
    try {
      result = await withContext(run, () =>
        tool.upstream.call(tool.original, args, upstreamOptions(name, attempt)),
      );
    } catch (e) {
      ctx.gov.finish(attempt, { status: "error", error: (e as Error).message });
      return errorResult((e as Error).message);
    }
    if (result.isError === true) {
      // What an error result says is redacted (or withheld) like any output: it can carry the same fields.
      const failed = ctx.gov.finish(attempt, {
        status: "error",
        error: mcpText(result).slice(0, 500),
        output: new McpOutput(result),
      });
      if (failed.action === "block") return errorResult(`${name} failed; its message is withheld by policy`);
      return cut(McpOutput.resultOf(failed.output, result));
    }
    // Every part the model sees is redacted on its own (policy/output.ts): each text part and embedded
    // resource, structuredContent; what paths cannot reach is withheld with a notice.
    const done = ctx.gov.finish(attempt, { status: "ok", output: new McpOutput(result) });
    if (done.action === "block") return errorResult(`the output of ${name} is withheld by policy`);
    try {
      await ctx.gov.auditLog.acknowledged(done.seq); // the output goes back once its outcome is on record
    } catch (e) {
      return errorResult(`the output of ${name} is withheld: ${(e as Error).message}`);
    }
    return cut(McpOutput.resultOf(done.output, result));
  };

  app.get("/.well-known/oauth-protected-resource", async () => metadata(ctx, options));
  app.get("/.well-known/oauth-protected-resource/mcp", async () => metadata(ctx, options));

  const guard = transportGuard({
    allowedOrigins: options.allowedOrigins,
    boundHost: options.boundHost,
    publicUrls: () => [options.publicUrl(), options.resource()],
  });
  const handle = async (req: FastifyRequest, reply: FastifyReply) => {
    // Before anything else: a page rebound to this host is refused before its request is authenticated.
    const refused = guard({ host: req.headers.host, origin: req.headers.origin });
    if (refused !== null) return reply.code(refused.status).send(refused.body);
    let caller: Caller;
    try {
      caller = await authenticate(ctx.gov, ctx.issuer, req);
      if (caller.delegation === null && !audiences(caller).includes(options.resource())) {
        throw new OnbehalfError(
          "ERR_TOKEN_AUDIENCE_INVALID",
          `this token is not issued for this gateway: its audience must include ${options.resource()} (RFC 8707)`,
        );
      }
    } catch (e) {
      // RFC 6750 §3.1: a request that sent no token gets no error code; a token that fails is invalid_token.
      const sent = !(e instanceof OnbehalfError && e.code === "ERR_TOKEN_MISSING");
      const invalid =
        sent && e instanceof OnbehalfError && e.status === 401
          ? { error: "invalid_token", error_description: e.message }
          : {};
      reply.header("www-authenticate", bearerChallenge(options, invalid));
      if (e instanceof OnbehalfError && e.status === 401) {
        reply.code(401);
        return reply.send(e.toJSON());
      }
      return sendError(reply, e);
    }
    const id = req.headers["mcp-session-id"];
    let session: Session | undefined;
    if (typeof id === "string") {
      session = sessions.get(id);
      if (session === undefined)
        return reply.code(404).send({
          error: {
            code: "ERR_NOT_FOUND",
            message:
              "no such MCP session: it ended, or was closed (idle, or over the session bounds); initialize a new one",
          },
        });
      if (session.user !== caller.principal.user || session.tenant !== caller.principal.tenant) {
        return reply.code(403).send({
          error: { code: "ERR_POLICY_DENIED", message: "this MCP session belongs to another user" },
        });
      }
      session.lastUsed = Date.now();
      sessions.delete(id); // to the end: the least recently used stay first
      sessions.set(id, session);
    } else if (req.method === "POST") {
      session = newSession(caller, req.headers.traceparent, await relays.capabilities());
      await session.server.connect(session.transport);
    } else {
      return reply
        .code(400)
        .send({ error: { code: "ERR_INVALID_ARGUMENT", message: "an MCP session id is required" } });
    }
    const raw = req.raw as IncomingMessage & { auth?: AuthInfo };
    const stepUp: StepUp = {};
    raw.auth = {
      token: "(verified by onbehalf)",
      clientId: caller.principal.user,
      scopes: [...caller.principal.scopes],
      extra: { caller, stepUp, note: (fields: AuditFields) => noteCall(req, fields, caller.principal) },
    };
    if (isSingleDecidedRequest(req.body)) answerStepUp(reply.raw, stepUp, options);
    if (req.method === "GET") session.streams.watch(reply.raw);
    reply.hijack();
    if (session.transport.answer(raw, reply.raw, req.body, raw.auth)) return;
    await session.transport.handleRequest(raw, reply.raw, req.body);
  };
  app.post("/mcp", handle);
  app.get("/mcp", handle);
  app.delete("/mcp", handle);

  return {
    async close() {
      clearInterval(idleSweep);
      stopWatching();
      await Promise.allSettled([...sessions.values()].map((s) => s.transport.close()));
      await Promise.allSettled(upstreams.map((u) => u.close()));
    },
  };
}

/** Set by a `tools/call` refused for a missing scope: the scopes its 403 challenge asks for. */
interface StepUp {
  scopes?: readonly string[];
  /** What needs them: a tool, a resource or a prompt. */
  what?: "tool" | "resource" | "prompt";
}

/**
 * `WWW-Authenticate: Bearer …` with `resource_metadata` (RFC 9728) and the given parameters, each made fit
 * for a quoted-string (a URL written with non-ASCII characters goes out in its ASCII form).
 */
function bearerChallenge(options: GatewayOptions, params: Record<string, string>): string {
  const fields = { ...params, resource_metadata: new URL(options.metadataUrl()).href };
  return `Bearer ${Object.entries(fields)
    .map(([k, v]) => `${k}="${headerSafe(v, 1000)}"`)
    .join(", ")}`;
}

/** The requests a missing scope refuses, which a scope step-up can answer (each decided as a call). */
const STEP_UP_METHODS: ReadonlySet<unknown> = new Set(["tools/call", "resources/read", "prompts/get"]);

/** A POST of one JSON-RPC request that a step-up can answer (not a batch): its refusal can be the HTTP answer. */
function isSingleDecidedRequest(body: unknown): boolean {
  return (
    typeof body === "object" &&
    body !== null &&
    !Array.isArray(body) &&
    STEP_UP_METHODS.has((body as { method?: unknown }).method) &&
    (body as { id?: unknown }).id !== undefined
  );
}

/**
 * The MCP authorization spec's scope step-up: a `tools/call`, `resources/read` or `prompts/get` refused for a
 * missing scope is answered with HTTP 403 and `WWW-Authenticate: Bearer error="insufficient_scope",
 * scope="…", resource_metadata="…"`, so a client can ask the user for those scopes and send the request again. The SDK's transport answers a request
 * only once its handler returns and gives the handler no say over the status, so the status is changed as
 * the answer (a JSON body, `enableJsonResponse`) goes out; the body is still the JSON-RPC answer, the tool
 * error that names the missing scope, for a client that reads it.
 */
function answerStepUp(res: ServerResponse, stepUp: StepUp, options: GatewayOptions): void {
  const writeHead = res.writeHead;
  res.writeHead = function (this: ServerResponse, status: number, ...rest: unknown[]) {
    if (stepUp.scopes !== undefined && status === 200) {
      status = 403;
      this.setHeader(
        "www-authenticate",
        bearerChallenge(options, {
          error: "insufficient_scope",
          scope: stepUp.scopes.join(" "),
          error_description: `this ${stepUp.what ?? "tool"} needs more scopes than the token grants`,
        }),
      );
    }
    return (writeHead as (...a: unknown[]) => ServerResponse).call(this, status, ...rest);
  } as typeof res.writeHead;
}

/**
 * The scopes a step-up asks for: the tool's required scopes and those the token already has that some tool
 * of this gateway requires (the MCP spec's recommended approach: a client that asks for only the new scopes
 * would lose the ones it had).
 */
function stepUpScopes(ctx: ServerContext, run: RunContext, name: string): string[] {
  const required = new Set(ctx.gov.policy.tools.get(name)?.requiredScopes ?? []);
  const used = new Set<string>();
  for (const t of ctx.gov.policy.tools.values()) for (const s of t.requiredScopes) used.add(s);
  for (const s of run.principal.scopes) if (used.has(s)) required.add(s);
  return [...required].sort();
}

/** Tool names a `tools` entry declares (the config's, and those added through the admin API). */
function declaredTools(ctx: ServerContext): Set<string> {
  return new Set(ctx.gov.config.tools.map((t) => t.name));
}

/**
 * Audits the first sight of each upstream tool (per instance), so operators learn of a tool an upstream added:
 * an `admin` record saying whether it is offered (declared, or `expose: all`) or hidden.
 */
function sightings(ctx: ServerContext) {
  const seen = new Set<string>();
  return (upstream: Upstream, tool: ExposedTool, declared: boolean, owner: Upstream | undefined) => {
    const key = `${upstream.name}\u0000${tool.original}`;
    if (seen.has(key)) return;
    seen.add(key);
    const offered = owner === undefined && (declared || upstream.config.expose === "all");
    ctx.gov.recordAdmin(
      owner !== undefined
        ? `upstream ${upstream.name} lists ${tool.name}, a name of upstream ${owner.name} (${owner.exposedPrefix}…): hidden, so no call meant for ${owner.name} reaches ${upstream.name}`
        : declared
          ? `upstream ${upstream.name} lists ${tool.name}`
          : offered
            ? `upstream ${upstream.name} lists ${tool.name}, not declared: offered with its default scopes (expose: all)`
            : `upstream ${upstream.name} lists ${tool.name}, not declared: hidden and refused until a tools entry declares it`,
      {
        upstream: upstream.name,
        original: tool.original,
        declared,
        expose: upstream.config.expose,
        ...(owner === undefined ? {} : { collides_with: owner.name }),
      },
      {
        tool: tool.name,
        decision: offered ? "allow" : "deny",
        reason_code: offered ? "ok" : "permission_deny",
      },
    );
  };
}

/** The upstream whose exposed names (`crm.…`) include `name`, among those exposed with a prefix. */
function ownerOf(name: string, upstreams: readonly Upstream[]): Upstream | undefined {
  return upstreams.find((u) => u.exposedPrefix !== "" && name.startsWith(u.exposedPrefix));
}

/** The agent an MCP client says it is (`clientInfo.name`), when it is a name an audit can hold. */
function clientName(name: string | undefined): string {
  return name === undefined || name === "" || hasUnsafeText(name) ? "mcp-client" : name.slice(0, 200);
}

function metadata(ctx: ServerContext, options: GatewayOptions) {
  const scopes = new Set<string>();
  for (const t of ctx.gov.policy.tools.values()) for (const s of t.requiredScopes) scopes.add(s);
  return {
    resource: options.resource(),
    // the IdPs that issue users' tokens, and onbehalf itself, which issues delegation tokens (RFC 8414 metadata)
    authorization_servers: [
      ...ctx.gov.config.issuers.map((i) => i.issuer),
      ...(/^https?:\/\//.test(ctx.issuer) ? [ctx.issuer] : []),
    ],
    bearer_methods_supported: ["header"],
    scopes_supported: [...scopes].sort(),
    resource_name: "onbehalf MCP gateway",
  };
}

function audiences(caller: Caller): string[] {
  const aud = caller.principal.claims["aud"];
  return Array.isArray(aud) ? aud.map(String) : typeof aud === "string" ? [aud] : [];
}

function errorResult(text: string): CallToolResult {
  return { content: [{ type: "text", text }], isError: true };
}

/** Results over the limit are cut, with a note the model can read. */
function cut(result: CallToolResult): CallToolResult {
  let budget = MAX_RESULT_BYTES;
  let cutBytes = 0;
  const content = result.content.map((c) => {
    if (c.type !== "text") return c;
    const size = Buffer.byteLength(c.text);
    if (size <= budget) {
      budget -= size;
      return c;
    }
    const kept = Buffer.from(c.text).subarray(0, budget).toString();
    cutBytes += size - budget;
    budget = 0;
    return { ...c, text: kept };
  });
  if (cutBytes === 0) return result;
  const { structuredContent: _dropped, ...rest } = result;
  return {
    ...rest,
    content: [
      ...content,
      {
        type: "text",
        text: `[onbehalf: result cut, ${cutBytes} bytes over the ${MAX_RESULT_BYTES}-byte limit]`,
      },
    ],
  };
}

/**
 * A call answered with `ask`, held open for an approver. MCP has no way to park a call, so the gateway opens an
 * approval (or finds the one already open for the same user, tool and arguments) and waits for its decision.
 * Once approved, the approval is taken (used once) and the call decided again under the policy in force,
 * which wins over the approval. Still undecided after `waitMs`: an error naming the approval, and the same
 * call made again waits on it. Returns the attempt to go on with, or the text of the error to return.
 */
async function holdForApproval(
  ctx: ServerContext,
  attempt: CallAttempt,
  run: RunContext,
  name: string,
  args: Record<string, unknown>,
  waitMs: number,
): Promise<CallAttempt | string> {
  const approvals = ctx.gov.approvals;
  let approval = await approvals.open(attempt, args);
  if (approval.status === "pending") approval = (await approvals.wait(approval.id, waitMs)) ?? approval;
  if (approval.status === "pending") {
    return `${name} is waiting for approval ${approval.id} (${attempt.decision.reason}); once an approver decides, make the same call again`;
  }
  const approved = await ctx.gov.beginApproved(run, name, args, approval.id, { source: "mcp" });
  return "attempt" in approved ? approved.attempt : `denied (${approved.reason_code}): ${approved.reason}`;
}
