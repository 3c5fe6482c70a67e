/**
 * The control plane (`onbehalf serve`): Fastify around one governor. It decides for remote agents
 * (`/v1/check`), takes their results, exchanges tokens for delegation, holds calls for approval, serves the
 * admin and audit APIs, and shares rate limits, pending calls, approvals and live policy through Redis when
 * several instances run (`limits.store: redis://…`).
 */
import { createPublicKey } from "node:crypto";
import { resolve } from "node:path";
import formbody from "@fastify/formbody";
import Fastify, { type FastifyInstance, type FastifyRequest, LogController } from "fastify";
import { verifierKeyString } from "../audit/checkpoint.js";
import type { ConfigInput } from "../config/schema.js";
import type { LogLevel } from "../config/server.js";
import { delegationIssuerConfig } from "../context/delegation.js";
import { OnbehalfError } from "../errors.js";
import {
  auditKeyPath,
  auditLogId,
  createGovernor,
  devAdminToken,
  type GovernorOptions,
} from "../govern/bootstrap.js";
import { type LoadedConfig, loadConfigFile, loadConfigObject } from "../govern/config.js";
import type { Governor } from "../govern/governor.js";
import { loadOrCreateSigningKey } from "../identity/keys.js";
import { adminRoutes } from "./admin.js";
import { approvalRoutes } from "./approvals.js";
import { auditRoutes } from "./audit-api.js";
import { checkRoutes } from "./check.js";
import type { ServerContext } from "./context.js";
import { adminCheck, sendError } from "./http.js";
import { baseOf, LiveConfigShare } from "./live-config.js";
import { mcpGateway } from "./mcp-gateway.js";
import { Metrics, statusClass } from "./metrics.js";
import { oauthMetadataRoutes } from "./oauth-metadata.js";
import { pendingCalls } from "./pending.js";
import { reportTokens } from "./report-token.js";
import { logRequest } from "./request-log.js";
import { spoolRoutes } from "./spool.js";
import { createMemoryState, type StateStore } from "./state.js";
import { tokenRoutes } from "./token-exchange.js";
import { traceRequests } from "./tracing.js";
import { DecisionStats } from "./ui/health.js";
import { consoleRoutes } from "./ui/routes.js";

export interface ServerOptions {
  /** A config file or object, as for createGovernor. */
  readonly config: string | ConfigInput;
  readonly env?: NodeJS.ProcessEnv;
  /** Overrides `server.port` (0: any free port). */
  readonly port?: number;
  readonly host?: string;
  readonly warn?: (message: string) => void;
  /** Extra governor options (tests: a fetch, a clock). */
  readonly governor?: Partial<GovernorOptions>;
  /**
   * The log (pino, JSON lines): its level (default `server.log_level`, `info`: a line per request; `silent`:
   * none) and where the lines go (default stdout).
   */
  readonly log?: { readonly level?: LogLevel; readonly stream?: { write(line: string): void } };
  /** @deprecated Request logs are on by default: `true` is `log: { level: "info" }`, `false` changes nothing. */
  readonly logRequests?: boolean;
  /** How long an approval waits. Default 15 minutes. */
  readonly approvalTtlSeconds?: number;
  /** Adds `POST /bench/echo`, a bare JSON endpoint to compare /v1/check with. Benchmarks only. */
  readonly benchRoute?: boolean;
}

export interface OnbehalfServer {
  readonly app: FastifyInstance;
  readonly governor: Governor;
  /** Where it listens, e.g. `http://127.0.0.1:8787`. */
  readonly url: string;
  /** The issuer of the tokens it signs. */
  readonly issuer: string;
  /** Which config is in force, and why (the file, or the live config stored by the instances). */
  readonly configSource: string;
  /**
   * Stop accepting requests, end long-polls, let requests in flight finish for `server.shutdown_seconds` (then
   * close their connections), flush the audit, release everything.
   */
  close(): Promise<void>;
  /**
   * Read the config file again (SIGHUP): validated first (a bad file throws `ERR_CONFIG_INVALID` and the config in
   * force stays), then its tenants and tools replace the live config, shared with the other instances and
   * audited. Returns what was done. Throws `ERR_INVALID_ARGUMENT` for a server started from a config object.
   */
  reload(): Promise<string>;
}

/**
 * Start the control plane.
 *
 * @example
 * const server = await startServer({ config: "onbehalf.yaml" });
 * console.log(server.url);
 */
export async function startServer(options: ServerOptions): Promise<OnbehalfServer> {
  const env = options.env ?? process.env;
  const loaded: LoadedConfig =
    typeof options.config === "string"
      ? loadConfigFile(options.config, env)
      : loadConfigObject(options.config);
  const server = loaded.config.server;
  const key = loadOrCreateSigningKey(resolve(loaded.baseDir, server.signing_key));
  const issuer = server.public_url ?? "urn:onbehalf:control-plane";
  const startupTimeoutMs = server.startup_wait_seconds * 1000;
  const port = options.port ?? server.port;
  const host = options.host ?? server.host;
  // The shared state first: the governor keeps its approvals there, so any instance sees them.
  const state = await openState(loaded, startupTimeoutMs);
  const approvalTtlMs = (options.approvalTtlSeconds ?? 900) * 1000;
  const pendingTtlMs = server.pending_call_seconds * 1000;
  const metrics = new Metrics();
  const stats = new DecisionStats(Date.now);
  const decided = metrics.histogram(
    "onbehalf_decision_duration_seconds",
    "Time to decide one governed call (policy and rate limit), by where it came from and what was decided.",
    ["source", "decision"],
    "fast",
  );
  let gov: Governor;
  try {
    gov = await createGovernor({
      config: options.config,
      env,
      source: "api",
      label: port === 0 ? "onbehalf serve" : `onbehalf serve on ${host}:${port}`,
      startupTimeoutMs,
      approvalStore: state,
      approvalTtlMs,
      onDecided: (source, decision, seconds) => {
        decided({ source, decision }, seconds);
        stats.add(decision, seconds);
      },
      ...(options.warn ? { warn: options.warn } : {}),
      ...options.governor,
      extraIssuers: [delegationIssuerConfig(issuer, key.publicJwk)],
    });
  } catch (e) {
    await state.close();
    throw e;
  }
  const warn = options.warn ?? ((m: string) => console.warn(`onbehalf: ${m}`));
  const file = typeof options.config === "string" ? options.config : undefined;
  const fileBase = () => {
    try {
      return file === undefined ? null : baseOf(loadConfigFile(file, env).config);
    } catch {
      return null;
    }
  };
  // The deployment is its server signing key (its RFC 7638 thumbprint): shared by its instances, no one else's.
  const live = new LiveConfigShare(
    gov,
    state,
    key.kid,
    baseOf(loaded.config),
    warn,
    () => gov.now(),
    fileBase,
  );
  let configSource: string;
  try {
    configSource = await live.adopt(
      server.live_config,
      typeof options.config === "string" ? options.config : undefined,
    );
  } catch (e) {
    await Promise.allSettled([gov.close(), state.close()]);
    throw e;
  }

  const level = options.log?.level ?? (options.logRequests === true ? "info" : server.log_level);
  const app = Fastify({
    logger:
      level === "silent"
        ? false
        : { level, ...(options.log?.stream === undefined ? {} : { stream: options.log.stream }) },
    // One line per request, written when it is answered (request-log.ts), instead of Fastify's two.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: server.max_body_bytes,
    return503OnClosing: true,
  });
  await app.register(formbody);
  const requests = metrics.counter(
    "onbehalf_http_requests_total",
    "HTTP requests by route template and status code.",
    ["route", "status"],
  );
  const requestSeconds = metrics.histogram(
    "onbehalf_http_request_duration_seconds",
    "HTTP request latency by route template, method and status class.",
    ["route", "method", "status_class"],
  );
  metrics.counterOf(
    "onbehalf_audit_committed_total",
    "Audit records this instance wrote since start.",
    () => gov.auditLog.committed,
  );
  metrics.counterOf(
    "onbehalf_audit_otlp_exported_total",
    "Audit records delivered to the OTLP endpoint (audit.otlp).",
    () => gov.auditLog.forwarder?.exported ?? 0,
  );
  metrics.counterOf(
    "onbehalf_audit_otlp_failed_total",
    "Audit records the OTLP endpoint did not take (they stay in the audit store).",
    () => gov.auditLog.forwarder?.failed ?? 0,
  );
  metrics.gauge("onbehalf_audit_healthy", "1 while the audit store accepts writes.", () =>
    gov.auditLog.healthy ? 1 : 0,
  );
  metrics.gauge(
    "onbehalf_audit_tree_size",
    "Records in this instance's audit log.",
    () => gov.auditLog.lastSeq,
  );
  traceRequests(app, routeOf);
  app.addHook("onResponse", async (req, reply) => {
    const route = routeOf(req);
    requests({ route, status: String(reply.statusCode) });
    requestSeconds(
      { route, method: methodOf(req.method), status_class: statusClass(reply.statusCode) },
      reply.elapsedTime / 1000,
    );
    if (level !== "silent") logRequest(req, reply, route);
  });
  app.setErrorHandler((error, _req, reply) => {
    if (error instanceof OnbehalfError) return sendError(reply, error);
    const e = error as { statusCode?: number; code?: string; message: string };
    if (e.statusCode !== undefined && e.statusCode >= 400 && e.statusCode < 500) {
      // Fastify's own refusals: malformed JSON, a body over the limit, an unsupported media type.
      return reply.code(e.statusCode).send({ error: { code: fastifyCode(e.code), message: e.message } });
    }
    return sendError(reply, error);
  });
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send({ error: { code: "ERR_NOT_FOUND", message: `no route ${req.method} ${req.url}` } }),
  );

  const ctx: ServerContext = {
    gov,
    state,
    issuer,
    key,
    // With the development issuer on, its admin token too (kept beside its key; serve prints it).
    adminOf: adminCheck(
      loaded.config.dev_issuer ? [...server.admin_tokens, devAdminToken(loaded)] : server.admin_tokens,
    ),
    metrics,
    approvalTtlMs,
    pendingTtlMs,
    pending: pendingCalls(gov, state, metrics, {
      ttlMs: pendingTtlMs,
      maxCalls: server.max_pending_calls,
      maxCallsPerUser: server.max_pending_calls_per_user,
    }),
    reportTokens: reportTokens(key, issuer),
    live,
  };
  // Without a configured public URL, the server's own address is known only once it listens.
  let listening = "";
  const publicUrl = () => (server.public_url ?? listening).replace(/\/$/, "");
  checkRoutes(app, ctx);
  tokenRoutes(app, ctx, () => `${publicUrl()}/v1/token`);
  oauthMetadataRoutes(app, ctx, publicUrl);
  approvalRoutes(app, ctx);
  adminRoutes(app, ctx);
  auditRoutes(app, ctx);
  spoolRoutes(app, ctx);
  consoleRoutes(app, ctx, {
    verifierKey: verifierKeyString(
      auditLogId(loaded),
      createPublicKey(loadOrCreateSigningKey(auditKeyPath(loaded)).privateKey),
    ),
    adminScope: server.console_admin_scope ?? null,
    secure: server.public_url?.startsWith("https:") === true,
    publicOrigin: server.public_url === undefined ? null : new URL(server.public_url).origin,
    stats,
  });
  const gateway = await mcpGateway(app, ctx, {
    resource: () => server.mcp_resource ?? `${publicUrl()}/mcp`,
    metadataUrl: () => `${publicUrl()}/.well-known/oauth-protected-resource`,
    publicUrl,
    boundHost: host,
    allowedOrigins: server.mcp_allowed_origins,
    approvalWaitMs: server.mcp_approval_wait_seconds * 1000,
    sessions: {
      max: server.max_mcp_sessions,
      perUser: server.max_mcp_sessions_per_user,
      idleMs: server.mcp_session_idle_seconds * 1000,
    },
  });
  if (options.benchRoute === true) {
    // A bare JSON endpoint for the benchmark: parses the same body, answers a body of the same size and shape.
    app.post("/bench/echo", async (req) => ({ ...BENCH_ANSWER, got: typeof req.body }));
  }

  try {
    await app.listen({ port, host });
  } catch (e) {
    ctx.pending.close();
    await Promise.allSettled([gov.close(), state.close()]);
    throw new OnbehalfError(
      "ERR_INVALID_ARGUMENT",
      `cannot listen on ${host}:${port}: ${(e as Error).message}`,
      { cause: e },
    );
  }
  const address = app.server.address();
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${typeof address === "object" && address ? address.port : port}`;
  listening = url;
  let closing: Promise<void> | undefined;
  return {
    app,
    governor: gov,
    url,
    issuer,
    configSource,
    close() {
      closing ??= (async () => {
        gov.approvals.endWaits();
        await gateway.close();
        await closeWithin(app, server.shutdown_seconds * 1000);
        ctx.pending.close();
        await gov.close();
        await state.close();
      })();
      return closing;
    },
    async reload() {
      if (typeof options.config !== "string") {
        throw new OnbehalfError(
          "ERR_INVALID_ARGUMENT",
          "this server was started from a config object: no file to reload",
        );
      }
      return live.reload(loadConfigFile(options.config, env), options.config);
    },
  };
}

const BENCH_ANSWER = {
  call_id: "01a2247d-b6de-7eff-9888-96e366824c32",
  decision: "allow",
  reason_code: "ok",
  reason: "allowed by defaults.*",
  rule: null,
  layer: "defaults.*",
  effective_scopes: ["customers:read"],
  chain: ["support-bot"],
  tenant: "acme",
  mode: "enforce",
  fail_mode: "fail_closed",
  post_transform: "audit",
  shadow: null,
};

/** Close `app`, giving requests in flight `ms` to finish before their connections are closed. */
async function closeWithin(app: FastifyInstance, ms: number): Promise<void> {
  const timer = setTimeout(() => app.server.closeAllConnections(), ms);
  try {
    await app.close();
  } finally {
    clearTimeout(timer);
  }
}

async function openState(loaded: LoadedConfig, startupTimeoutMs: number): Promise<StateStore> {
  const store = loaded.config.limits.store;
  const server = loaded.config.server;
  const bounds = {
    maxCalls: server.max_pending_calls,
    maxApprovals: server.max_approvals,
    maxCallsPerUser: server.max_pending_calls_per_user,
    maxApprovalsPerUser: server.max_approvals_per_user,
  };
  if (store.startsWith("redis://") || store.startsWith("rediss://")) {
    const { createRedisState } = await import("./state-redis.js");
    return createRedisState(store, {
      startupTimeoutMs,
      prefix: loaded.config.limits.redis_prefix,
      bounds,
      goneMs: server.pending_call_seconds * 1000,
    });
  }
  return createMemoryState(bounds);
}

/** The route template a request matched (`/v1/calls/:id/result`), never its URL; `unknown` for a 404. */
function routeOf(req: FastifyRequest): string {
  return req.routeOptions.url ?? "unknown";
}

const METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);

/** The method as a label: one of the common ones, else `other`. */
function methodOf(method: string): string {
  return METHODS.has(method) ? method : "other";
}

function fastifyCode(code: string | undefined): string {
  if (code === "FST_ERR_CTP_BODY_TOO_LARGE") return "ERR_BODY_TOO_LARGE";
  if (code === "FST_ERR_CTP_INVALID_MEDIA_TYPE") return "ERR_UNSUPPORTED_MEDIA_TYPE";
  if (code === "FST_ERR_CTP_EMPTY_JSON_BODY" || code === "FST_ERR_CTP_INVALID_JSON_BODY")
    return "ERR_INVALID_JSON";
  return "ERR_INVALID_ARGUMENT";
}
