/**
 * What the gateway's upstreams list besides tools: resources, resource templates and prompts, fetched page by
 * page once per connection and fetched again when the upstream says a list changed. Also what resources.ts
 * and prompts.ts share: how a read or a get is decided, held for approval, and refused.
 */
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import type { RequestOptions } from "@modelcontextprotocol/sdk/shared/protocol.js";
import {
  ErrorCode,
  McpError,
  type Prompt,
  PromptListChangedNotificationSchema,
  type Resource,
  ResourceListChangedNotificationSchema,
  type ResourceTemplate,
  ResourceUpdatedNotificationSchema,
  type ServerCapabilities,
} from "@modelcontextprotocol/sdk/types.js";
import type { RunContext } from "../context/run.js";
import type { CallAttempt } from "../govern/pipeline.js";
import type { ServerContext } from "./context.js";
import type { Upstream } from "./upstreams.js";

/** How long a session opening waits for an upstream to say what it can do. */
const CAPABILITIES_WAIT_MS = 3_000;

/** Most items taken from one upstream list (its pages followed until then). */
const MAX_ITEMS = 10_000;

/** What the resources and prompts relays need from the gateway. */
export interface RelayDeps {
  readonly ctx: ServerContext;
  readonly upstreams: readonly Upstream[];
  /** Hold a call the policy answers with `ask` for an approver (the gateway's, as for tools). */
  readonly hold: (
    attempt: CallAttempt,
    run: RunContext,
    name: string,
    args: Record<string, unknown>,
  ) => Promise<CallAttempt | string>;
  /** A read or get refused for a missing scope: the HTTP answer becomes the scope step-up's 403. */
  readonly insufficientScope?: (run: RunContext, name: string) => void;
  /** What the policy decided for the request `run` was made for (its request log line names the call). */
  readonly decided?: (run: RunContext, attempt: CallAttempt) => void;
}

/** One connection's lists, by kind. */
type Lists = Map<"resources" | "templates" | "prompts", Promise<unknown[]>>;

/**
 * Each upstream's resources, templates and prompts, cached per connection (a new connection lists again) and
 * dropped when the upstream sends `notifications/resources/list_changed` or `…/prompts/list_changed`; then
 * `changed` is told, so the gateway can tell its sessions.
 *
 * @example
 * const listings = new Listings(upstreams, (kind) => notifySessions(kind));
 * await listings.resources(upstreams[0]);
 */
export class Listings {
  private readonly lists = new WeakMap<Client, Lists>();

  constructor(
    upstreams: readonly Upstream[],
    changed: (kind: "resources" | "prompts") => void,
    /** Told of each `notifications/resources/updated` (see mcp-subscriptions.ts). */
    updated: (upstream: Upstream, uri: string) => void = () => {},
  ) {
    for (const upstream of upstreams) {
      upstream.onConnect((client) => {
        client.setNotificationHandler(ResourceListChangedNotificationSchema, async () => {
          this.lists.get(client)?.delete("resources");
          this.lists.get(client)?.delete("templates");
          changed("resources");
        });
        client.setNotificationHandler(ResourceUpdatedNotificationSchema, async (n) => {
          updated(upstream, n.params.uri);
        });
        client.setNotificationHandler(PromptListChangedNotificationSchema, async () => {
          this.lists.get(client)?.delete("prompts");
          changed("prompts");
        });
      });
    }
  }

  /**
   * What the upstream said it can do; undefined when it cannot be reached within `waitMs` (a session opening
   * does not wait on an upstream that hangs; the next one will know).
   */
  async capabilities(
    upstream: Upstream,
    waitMs = CAPABILITIES_WAIT_MS,
  ): Promise<ServerCapabilities | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), waitMs);
      timer.unref();
    });
    try {
      return await Promise.race([upstream.capabilities().catch(() => undefined), late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The upstream's resources; none when it offers none or cannot be reached. */
  resources(upstream: Upstream): Promise<Resource[]> {
    return this.list(upstream, "resources", "resources", async (client, cursor, options) => {
      const page = await client.listResources(cursor === undefined ? {} : { cursor }, options);
      return { items: page.resources, next: page.nextCursor };
    });
  }

  /** The upstream's resource templates; none when it offers none or cannot be reached. */
  templates(upstream: Upstream): Promise<ResourceTemplate[]> {
    return this.list(upstream, "templates", "resources", async (client, cursor, options) => {
      const page = await client.listResourceTemplates(cursor === undefined ? {} : { cursor }, options);
      return { items: page.resourceTemplates, next: page.nextCursor };
    });
  }

  /** The upstream's prompts; none when it offers none or cannot be reached. */
  prompts(upstream: Upstream): Promise<Prompt[]> {
    return this.list(upstream, "prompts", "prompts", async (client, cursor, options) => {
      const page = await client.listPrompts(cursor === undefined ? {} : { cursor }, options);
      return { items: page.prompts, next: page.nextCursor };
    });
  }

  private async list<T>(
    upstream: Upstream,
    key: "resources" | "templates" | "prompts",
    capability: "resources" | "prompts",
    page: (
      client: Client,
      cursor: string | undefined,
      options: RequestOptions,
    ) => Promise<{ items: T[]; next: string | undefined }>,
  ): Promise<T[]> {
    try {
      return await upstream.request(`${key}/list`, (client, options) => {
        if (client.getServerCapabilities()?.[capability] === undefined) return Promise.resolve([]);
        let lists = this.lists.get(client);
        if (lists === undefined) {
          lists = new Map();
          this.lists.set(client, lists);
        }
        const cached = lists.get(key);
        if (cached !== undefined) return cached as Promise<T[]>;
        const fetched = (async () => {
          const items: T[] = [];
          let cursor: string | undefined;
          do {
            const p = await page(client, cursor, options);
            items.push(...p.items);
            cursor = p.next;
          } while (cursor !== undefined && items.length < MAX_ITEMS);
          return items.slice(0, MAX_ITEMS);
        })();
        const held = lists;
        held.set(key, fetched);
        // A list that failed is asked for again next time.
        fetched.catch(() => {
          if (held.get(key) === fetched) held.delete(key);
        });
        return fetched;
      });
    } catch {
      return []; // an upstream that is down lists nothing
    }
  }
}

/**
 * Decide a read or get as the call `name` with `args`, hold an `ask` for an approver, and commit its attempt
 * before anything reaches an upstream (as tools/call does). Throws the JSON-RPC error the refusal is answered
 * with; returns the allowed attempt.
 */
export async function decidedRead(
  deps: RelayDeps,
  run: RunContext,
  name: string,
  args: Record<string, unknown>,
): Promise<CallAttempt> {
  const { gov } = deps.ctx;
  let attempt = await gov.begin(run, name, args, { source: "mcp" });
  deps.decided?.(run, attempt);
  if (attempt.decision.decision === "ask") {
    const held = await deps.hold(attempt, run, name, args);
    if (typeof held === "string") throw deniedError("approval_required", held);
    attempt = held;
    deps.decided?.(run, attempt);
  }
  const d = attempt.decision;
  if (d.decision !== "allow") {
    if (d.reason_code === "missing_scope") deps.insufficientScope?.(run, name);
    throw deniedError(d.reason_code, d.reason);
  }
  try {
    await gov.auditLog.acknowledged(attempt.seq);
  } catch (e) {
    gov.finish(attempt, { status: "error", error: `not run: ${(e as Error).message}` });
    throw deniedError("fail_closed", (e as Error).message);
  }
  return attempt;
}

/** The JSON-RPC error a refused read or get is answered with; `data.reason_code` says why. */
export function deniedError(reasonCode: string, reason: string): McpError {
  return new McpError(ErrorCode.InvalidRequest, `denied (${reasonCode}): ${reason}`, {
    reason_code: reasonCode,
  });
}

/** MCP's "resource not found" (-32002), also used for a prompt no upstream offers. */
export const NOT_FOUND = -32002;

/** What a request handler is given that names the caller (the gateway turns it into a run). */
export interface RequestExtra {
  authInfo?: { extra?: Record<string, unknown> };
  requestInfo?: { headers: Record<string, string | string[] | undefined> };
}

/**
 * Audits the first sight (per instance) of each resource and prompt an upstream lists, as the gateway does for
 * tools: an `admin` record saying whether it is offered (declared, or `expose: all`) or hidden, so operators
 * learn when an upstream grows one.
 *
 * @example
 * const sighted = sightings(ctx);
 * sighted(upstream, "resource", "crm://secret/keys", "resource:crm://secret/keys", false);
 */
export function sightings(ctx: ServerContext) {
  const seen = new Set<string>();
  return (upstream: Upstream, kind: "resource" | "prompt", item: string, name: string, offered: boolean) => {
    const key = `${upstream.name}\u0000${kind}\u0000${item}`;
    if (seen.has(key)) return;
    if (seen.size > 100_000) seen.clear();
    seen.add(key);
    const entry = kind === "resource" ? "resources" : "prompts";
    ctx.gov.recordAdmin(
      offered
        ? `upstream ${upstream.name} lists ${kind} ${item}: offered as ${name}`
        : `upstream ${upstream.name} lists ${kind} ${item}, not declared: hidden and refused until a ${entry} entry declares it`,
      { upstream: upstream.name, [kind]: item, expose: upstream.config.expose },
      { tool: name, decision: offered ? "allow" : "deny", reason_code: offered ? "ok" : "permission_deny" },
    );
  };
}
