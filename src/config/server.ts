/** The control plane's configuration: how it listens, and the MCP servers its gateway fronts. */
import { z } from "zod";
import { nonEmpty } from "./fields.js";

export const UpstreamConfig = z.strictObject({
  name: nonEmpty.regex(/^[A-Za-z0-9_-]+$/, "upstream names use letters, digits, _ and -"),
  transport: z.enum(["streamable-http", "stdio"]),
  url: z.string().url().optional(),
  command: nonEmpty.optional(),
  args: z.array(z.string()).default([]),
  /** What its exposed names start with (before `separator`); default its name; `""`: its tools' own names. */
  prefix: z.string().optional(),
  /** Between prefix and tool name. OpenAI function names allow no dots: use "_" or "__" for those clients. */
  separator: z.enum([".", "_", "__", "-"]).default("."),
  timeout_ms: z.number().int().positive().default(30_000),
  /**
   * Which of the upstream's tools the gateway offers: `declared` (default) only those a `tools` entry names
   * (by their exposed name), so a tool the upstream adds tomorrow is neither listed nor callable until someone
   * declares it; `all` every tool it lists, the undeclared ones with `default_scopes` required.
   */
  expose: z.enum(["declared", "all"]).default("declared"),
  /** With `expose: all`: the scopes an undeclared tool of this upstream requires. */
  default_scopes: z.array(nonEmpty).default([]),
  auth: z
    .union([
      z.strictObject({ type: z.literal("none") }),
      z.strictObject({ type: z.literal("obo"), audience: nonEmpty }),
      z.strictObject({ type: z.literal("static"), header: nonEmpty, value: nonEmpty }),
    ])
    .default({ type: "none" }),
});
export type UpstreamConfig = z.output<typeof UpstreamConfig>;

/** Levels of the control plane's log, most severe first; `silent` logs nothing. */
export const LogLevel = z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]);
export type LogLevel = z.output<typeof LogLevel>;

/**
 * What an upstream's exposed tool names start with: `<prefix or name><separator>` (`crm.`), or nothing when
 * it says `prefix: ""` (its tools under the names it gives them).
 *
 * @example
 * exposedPrefix({ name: "crm", prefix: undefined, separator: "." }); // "crm."
 */
export function exposedPrefix(config: Pick<UpstreamConfig, "name" | "prefix" | "separator">): string {
  return config.prefix === "" ? "" : `${config.prefix ?? config.name}${config.separator}`;
}

export const ServerConfig = z.strictObject({
  host: nonEmpty.default("127.0.0.1"),
  port: z.number().int().min(0).max(65535).default(8787),
  public_url: z.string().url().optional(),
  admin_tokens: z.array(z.string()).default([]),
  signing_key: nonEmpty.default("./keys/onbehalf.jwk"),
  max_body_bytes: z.number().int().positive().default(1_048_576),
  /** The resource identifier MCP clients' tokens must be issued for (RFC 8707). Default `<public_url>/mcp`. */
  mcp_resource: z.string().url().optional(),
  /**
   * The browser origins (`scheme://host[:port]`) whose pages may call `/mcp`, besides `public_url`'s. Unset:
   * loopback origins are accepted when the server binds a loopback host. A request with another `Origin` is
   * refused with 403 (DNS rebinding); one without `Origin` (not from a browser) is not.
   */
  mcp_allowed_origins: z.array(z.string().url()).optional(),
  /**
   * How long an MCP tool call the policy answers with `ask` is held open for an approver (below the MCP SDK
   * client's 60 s request timeout). Still undecided: the call returns an error naming the approval, and the
   * same call made again waits on the same approval.
   */
  mcp_approval_wait_seconds: z.number().min(0).max(600).default(50),
  /**
   * Which config is in force at start when the live config stored in the state store (Redis) was made from
   * another version of this file: `auto` refuses to start and says so; `file` starts from the file (replacing
   * the stored one; its changes are in the audit log); `stored` keeps the stored one.
   */
  live_config: z.enum(["auto", "file", "stored"]).default("auto"),
  /** How long `serve` waits for the audit store and Redis to answer at start before it gives up. */
  startup_wait_seconds: z.number().min(0).max(3600).default(30),
  /**
   * How long shutdown (SIGTERM, SIGINT) lets requests in flight finish before it closes their connections.
   * Long-polls answer at once with the approval as it is; the audit is flushed after, whatever this says.
   */
  shutdown_seconds: z.number().min(0).max(600).default(10),
  /**
   * The log's level: `info` (default) writes one JSON line per request on stdout (route, status, latency, and
   * the user, tool and decision of a governed call; never tokens or arguments); `silent` turns it off.
   */
  log_level: LogLevel.default("info"),
  /**
   * The console (`/ui`): an IdP token carrying this scope signs in as an admin (every tenant, every page). Unset:
   * only admin tokens do. A token with `onbehalf:approve` signs in as an approver of its tenant either way.
   */
  console_admin_scope: nonEmpty.optional(),
  /**
   * How long an allowed call waits for its result (`POST /v1/calls/{id}/result`). Past it the call's outcome is
   * audited as `expired` and a late report is answered 404. A call that asked for approval waits this long after
   * the approval's own time.
   */
  pending_call_seconds: z.number().int().min(1).max(3600).default(300),
  /**
   * How many calls may wait for their result at once (memory, or Redis, shared by the instances). At the bound
   * the oldest go: their outcome is audited as `expired`. About 1 KB each.
   */
  max_pending_calls: z.number().int().min(1).default(50_000),
  /**
   * How many calls of one user may wait at once; at it, that user's oldest goes (audited as `expired`), so that
   * no user, of any tenant, can push another's calls out by filling the shared bound.
   */
  max_pending_calls_per_user: z.number().int().min(1).default(5_000),
  /** How many approvals are kept, waiting or decided; at the bound the oldest go. */
  max_approvals: z.number().int().min(1).default(10_000),
  /** How many approvals of one requester are kept; at it, that requester's oldest goes (not anyone else's). */
  max_approvals_per_user: z.number().int().min(1).default(1_000),
  /** How many MCP sessions this instance keeps open; at the bound the least recently used one is closed. */
  max_mcp_sessions: z.number().int().min(1).default(1_000),
  /** How many MCP sessions one user may keep open on this instance; a new one closes their least recent. */
  max_mcp_sessions_per_user: z.number().int().min(1).default(16),
  /** An MCP session with no request for this long is closed (its upstream sessions end with it). */
  mcp_session_idle_seconds: z.number().int().min(1).max(86_400).default(600),
});
export type ServerConfig = z.output<typeof ServerConfig>;
