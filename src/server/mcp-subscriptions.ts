/**
 * `resources/subscribe` and `resources/unsubscribe` through the gateway, per user. A session may subscribe to a
 * resource its user may read (as a list shows it); the gateway subscribes upstream once per URI, however many
 * sessions asked, and relays each `notifications/resources/updated` only to the sessions subscribed to that
 * URI of that upstream whose user may still read it. A subscription ends when its session ends, when its user
 * unsubscribes, or when an update finds the user no longer permitted (their permission was revoked); the
 * upstream subscription ends with the last one, and is made again when the upstream's connection is reopened.
 * Reads stay decided one by one: an update carries only the URI. Each subscription's start, refusal and end
 * (and why it ended) is audited as the user's (mcp-audit.ts).
 */
import type { Server } from "@modelcontextprotocol/sdk/server/index.js";
import {
  ErrorCode,
  McpError,
  SubscribeRequestSchema,
  UnsubscribeRequestSchema,
} from "@modelcontextprotocol/sdk/types.js";
import type { RunContext } from "../context/run.js";
import { withContext } from "../context/run.js";
import type { Governor } from "../govern/governor.js";
import { recordSessionEvent } from "./mcp-audit.js";
import type { RequestExtra } from "./mcp-listings.js";
import type { ResourceRelay } from "./mcp-resources.js";
import type { Upstream } from "./upstreams.js";

/** Why a subscription ended, as the audit says it. */
const ENDED = {
  unsubscribed: "they unsubscribed",
  revoked: "they may no longer read it",
  session_ended: "their session ended",
} as const;

/** Most subscriptions one session may hold. */
const MAX_PER_SESSION = 1000;

interface Subscription {
  readonly upstream: Upstream;
  /** The policy name the URI is decided under, checked again at each update. */
  readonly name: string;
  /** Who subscribed, as of the subscription. */
  readonly run: RunContext;
}

/**
 * The subscriptions of one gateway.
 *
 * @example
 * const subscriptions = new Subscriptions(resources, upstreams);
 * subscriptions.register(server, requestRun); // in each session that advertises resources.subscribe
 */
export class Subscriptions {
  private readonly bySession = new Map<Server, Map<string, Subscription>>();
  /** Per upstream, how many sessions are subscribed to each URI. */
  private readonly upstreamCounts = new Map<Upstream, Map<string, number>>();

  constructor(
    private readonly gov: Governor,
    private readonly resources: ResourceRelay,
    upstreams: readonly Upstream[],
  ) {
    for (const upstream of upstreams) {
      let opened = 0;
      upstream.onConnect(() => {
        opened += 1;
        // A reopened connection (a restarted upstream, a lost HTTP session) holds none of the subscriptions
        // made on the one before: once it is open, they are made again.
        if (opened > 1) void Promise.resolve().then(() => this.resubscribe(upstream));
      });
    }
  }

  /** Answer subscribe and unsubscribe on a session's server, and end its subscriptions when it closes. */
  register(server: Server, runOf: (extra: RequestExtra) => RunContext): void {
    server.setRequestHandler(SubscribeRequestSchema, async (req, extra) => {
      await this.subscribe(server, runOf(extra), req.params.uri);
      return {};
    });
    server.setRequestHandler(UnsubscribeRequestSchema, async (req, extra) => {
      runOf(extra);
      await this.unsubscribe(server, req.params.uri, "unsubscribed");
      return {};
    });
    const previous = server.onclose;
    server.onclose = () => {
      previous?.();
      void this.end(server);
    };
  }

  /** An upstream said `uri` changed: tell the sessions subscribed to it whose user may still read it. */
  updated(upstream: Upstream, uri: string): void {
    for (const [server, subs] of this.bySession) {
      const sub = subs.get(uri);
      if (sub === undefined || sub.upstream !== upstream) continue;
      if (!this.resources.stillVisible(sub.run, sub.name)) {
        void this.unsubscribe(server, uri, "revoked"); // the subscription ends
        continue;
      }
      void server.sendResourceUpdated({ uri }).catch(() => {});
    }
  }

  private async subscribe(server: Server, run: RunContext, uri: string): Promise<void> {
    const target = await this.resources.subscribable(run, uri);
    const who = run.principal.user;
    if (target === undefined) {
      recordSessionEvent(this.gov, run, {
        tool: `resource:${uri}`,
        args: { uri, method: "resources/subscribe" },
        ok: false,
        refusedAs: "permission_deny",
        reason: `${who} may not subscribe to ${uri}: it is not offered to them`,
      });
      throw new McpError(ErrorCode.InvalidParams, `no resource ${uri} is offered to you`);
    }
    let subs = this.bySession.get(server);
    if (subs === undefined) {
      subs = new Map();
      this.bySession.set(server, subs);
    }
    if (subs.has(uri)) return;
    if (subs.size >= MAX_PER_SESSION) {
      throw new McpError(
        ErrorCode.InvalidRequest,
        `a session holds at most ${MAX_PER_SESSION} subscriptions`,
      );
    }
    subs.set(uri, { upstream: target.upstream, name: target.name, run });
    const counts = this.countsOf(target.upstream);
    const n = counts.get(uri) ?? 0;
    counts.set(uri, n + 1);
    const audit = (ok: boolean, reason: string) =>
      recordSessionEvent(this.gov, run, {
        tool: target.name,
        args: { uri, method: "resources/subscribe", upstream: target.upstream.name },
        ok,
        reason,
      });
    if (n === 0) {
      try {
        await withContext(run, () =>
          target.upstream.request("resources/subscribe", (client, options) =>
            client.subscribeResource({ uri }, options),
          ),
        );
      } catch (e) {
        subs.delete(uri);
        this.release(target.upstream, uri);
        audit(false, `${who} could not subscribe to ${uri}: ${(e as Error).message}`);
        throw new McpError(ErrorCode.InternalError, (e as Error).message);
      }
    }
    audit(true, `${who} subscribed to ${uri}`);
  }

  private async unsubscribe(server: Server, uri: string, why: keyof typeof ENDED): Promise<void> {
    const sub = this.bySession.get(server)?.get(uri);
    if (sub === undefined) return;
    this.bySession.get(server)?.delete(uri);
    recordSessionEvent(this.gov, sub.run, {
      tool: sub.name,
      args: { uri, method: "resources/unsubscribe", upstream: sub.upstream.name, ended: why },
      ok: true,
      reason: `${sub.run.principal.user}'s subscription to ${uri} ended: ${ENDED[why]}`,
    });
    if (this.release(sub.upstream, uri)) {
      await sub.upstream
        .request("resources/unsubscribe", (client, options) => client.unsubscribeResource({ uri }, options))
        .catch(() => {}); // an upstream that is gone holds no subscription
    }
  }

  /** End every subscription of a session that closed. */
  private async end(server: Server): Promise<void> {
    const subs = this.bySession.get(server);
    if (subs === undefined) return;
    await Promise.allSettled([...subs.keys()].map((uri) => this.unsubscribe(server, uri, "session_ended")));
    this.bySession.delete(server);
  }

  private async resubscribe(upstream: Upstream): Promise<void> {
    for (const uri of [...this.countsOf(upstream).keys()]) {
      await upstream
        .request("resources/subscribe", (client, options) => client.subscribeResource({ uri }, options))
        .catch(() => {}); // not reachable after all: the next connection tries again
    }
  }

  private countsOf(upstream: Upstream): Map<string, number> {
    let counts = this.upstreamCounts.get(upstream);
    if (counts === undefined) {
      counts = new Map();
      this.upstreamCounts.set(upstream, counts);
    }
    return counts;
  }

  /** One subscriber fewer; true when it was the last (the upstream subscription should end). */
  private release(upstream: Upstream, uri: string): boolean {
    const counts = this.countsOf(upstream);
    const n = (counts.get(uri) ?? 1) - 1;
    if (n > 0) {
      counts.set(uri, n);
      return false;
    }
    counts.delete(uri);
    return true;
  }
}
