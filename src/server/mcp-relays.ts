/**
 * What the gateway relays besides tools, in one place for mcp-gateway.ts: resources (mcp-resources.ts),
 * prompts (mcp-prompts.ts) and completion, each advertised to a new session when any upstream offers it.
 */
import type { Server } from "@modelcontextprotocol/sdk/server/index.js";
import {
  type CompleteRequest,
  CompleteRequestSchema,
  type CompleteResult,
  ErrorCode,
  McpError,
  type ServerCapabilities,
} from "@modelcontextprotocol/sdk/types.js";
import { type RunContext, withContext } from "../context/run.js";
import { Listings, type RelayDeps, type RequestExtra } from "./mcp-listings.js";
import { PromptRelay } from "./mcp-prompts.js";
import { ResourceRelay } from "./mcp-resources.js";
import { Subscriptions } from "./mcp-subscriptions.js";
import type { Upstream } from "./upstreams.js";

/** The relays of one gateway. */
export interface Relays {
  /** What to advertise to a session opened now: `resources` and `prompts` when an upstream offers them. */
  capabilities(): Promise<ServerCapabilities>;
  /** Register `capabilities` on a session's server (before it connects) and answer their methods. */
  attach(server: Server, runOf: (extra: RequestExtra) => RunContext, capabilities: ServerCapabilities): void;
  /** Tell every session its resources and prompts lists may have changed (an upstream's, or the policy). */
  listsChanged(kind: "resources" | "prompts"): void;
}

/**
 * The resources and prompts relays; `sessions` are told when an upstream's list changes.
 *
 * @example
 * const relays = mcpRelays(deps, () => [...sessions.values()].map((s) => s.server));
 * relays.attach(server, requestRun, await relays.capabilities());
 */
export function mcpRelays(deps: RelayDeps, sessions: () => Iterable<Server>): Relays {
  let subscriptions: Subscriptions | undefined;
  const listsChanged = (kind: "resources" | "prompts") => {
    for (const server of sessions()) {
      // A session opened before the upstream offered this kind did not advertise it: the SDK refuses the send.
      try {
        const sent = kind === "resources" ? server.sendResourceListChanged() : server.sendPromptListChanged();
        void sent.catch(() => {});
      } catch {}
    }
  };
  const listings = new Listings(deps.upstreams, listsChanged, (upstream, uri) =>
    subscriptions?.updated(upstream, uri),
  );
  const resources = new ResourceRelay(deps, listings);
  subscriptions = new Subscriptions(deps.ctx.gov, resources, deps.upstreams);
  const prompts = new PromptRelay(deps, listings);
  /**
   * `completion/complete`, passed through for a prompt or a resource template this user may see, to the
   * upstream offering it (not audited: it reads nothing the user could not list). Anything else is refused.
   */
  const complete = async (run: RunContext, params: CompleteRequest["params"]): Promise<CompleteResult> => {
    const ref = params.ref;
    let upstream: Upstream | undefined;
    let upstreamRef: CompleteRequest["params"]["ref"] = ref;
    if (ref.type === "ref/prompt") {
      const target = await prompts.completionTarget(run, ref.name);
      upstream = target?.upstream;
      if (target !== undefined) upstreamRef = { ...ref, name: target.name };
    } else {
      upstream = await resources.completionTarget(run, ref.uri);
    }
    if (upstream === undefined) {
      throw new McpError(
        ErrorCode.InvalidParams,
        "no prompt or resource template of that name is offered to you",
      );
    }
    const ask = upstream;
    if ((await ask.capabilities())?.completions === undefined) return { completion: { values: [] } };
    return withContext(run, () =>
      ask.request("completion/complete", (client, options) =>
        client.complete({ ...params, ref: upstreamRef }, options),
      ),
    );
  };
  return {
    listsChanged,
    async capabilities() {
      const all = await Promise.all(deps.upstreams.map((u) => listings.capabilities(u)));
      return {
        ...(all.some((c) => c?.resources !== undefined)
          ? {
              resources: {
                listChanged: true,
                ...(all.some((c) => c?.resources?.subscribe === true) ? { subscribe: true } : {}),
              },
            }
          : {}),
        ...(all.some((c) => c?.prompts !== undefined) ? { prompts: { listChanged: true } } : {}),
        ...(all.some((c) => c?.completions !== undefined) ? { completions: {} } : {}),
      };
    },
    attach(server, runOf, capabilities) {
      server.registerCapabilities(capabilities);
      if (capabilities.resources !== undefined) resources.register(server, runOf);
      if (capabilities.resources?.subscribe === true) subscriptions?.register(server, runOf);
      if (capabilities.prompts !== undefined) prompts.register(server, runOf);
      if (capabilities.completions !== undefined) {
        server.setRequestHandler(CompleteRequestSchema, async (req, extra) =>
          complete(runOf(extra), req.params),
        );
      }
    },
  };
}
