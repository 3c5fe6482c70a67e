/**
 * Layered permissions, exactly as CONTRACT.md's precedence paragraph says:
 *
 * 1. a `user_tools` entry for this user, tool and tier decides;
 * 2. otherwise the `tools` entry and the `users` entry both apply, and a deny (or ask) in either wins over an
 *    allow;
 * 3. otherwise `defaults`;
 * 4. no entry at all: deny.
 *
 * Within a layer cell, the entry for the call's tier wins over `"*"`. An entry without `permission` (say,
 * only a rate limit) takes no part in the permission decision. Every layer whose entry sets
 * `rate_limit_per_minute` adds a bucket, whichever layer decided the permission.
 */

import type { LayerEntry, Permission, PostTransform, Tier } from "../config/policy.js";
import type { Bucket } from "../decision.js";

export type LayerName = "user_tools" | "tools" | "users" | "defaults";

/** One layer cell that matched the call. */
export interface LayerHit {
  readonly layer: LayerName;
  /** Where its permission comes from, e.g. `user_tools["auth0|bob"].grant_permission.interactive`. */
  readonly path: string;
  /** The cell's entry for the tier, `"*"` filled in field by field. */
  readonly entry: LayerEntry;
  /** Where its rate limit comes from. */
  readonly limitPath: string;
}

/** One layer cell resolved for each tier (`"*"` filled in field by field); each knows where it came from. */
export type TierTable = ReadonlyMap<Tier, LayerHit>;

/** A tenant's four permission layers, compiled (see compile.ts). */
export interface LayerTables {
  readonly id: string;
  readonly defaults: TierTable;
  readonly tools: ReadonlyMap<string, TierTable>;
  readonly users: ReadonlyMap<string, TierTable>;
  readonly userTools: ReadonlyMap<string, ReadonlyMap<string, TierTable>>;
}

export interface LayerResolution {
  readonly permission: Permission;
  /** The layer cell that decided, or null when no entry matched (deny). */
  readonly decidedBy: LayerHit | null;
  readonly hits: readonly LayerHit[];
  readonly postTransform: PostTransform;
  readonly buckets: readonly Bucket[];
}

const STRICTNESS: Record<Permission, number> = { allow: 0, ask: 1, deny: 2 };
const TRANSFORM_STRICTNESS: Record<PostTransform, number> = { audit: 0, redact: 1, block: 2 };

/**
 * Resolve the permission, post-transform and rate-limit buckets for one call.
 *
 * @example
 * resolveLayers(tenant, "auth0|bob", "grant_permission", "interactive").permission; // "allow"
 */
export function resolveLayers(tenant: LayerTables, user: string, tool: string, tier: Tier): LayerResolution {
  const hits: LayerHit[] = [];
  const userTools = hit(tenant.userTools.get(user)?.get(tool), tier);
  const tools = hit(tenant.tools.get(tool), tier);
  const users = hit(tenant.users.get(user), tier);
  const defaults = hit(tenant.defaults, tier);
  if (userTools) hits.push(userTools);
  if (tools) hits.push(tools);
  if (users) hits.push(users);
  if (defaults) hits.push(defaults);

  let decidedBy: LayerHit | null = null;
  if (userTools?.entry.permission !== undefined) {
    decidedBy = userTools;
  } else if (tools?.entry.permission !== undefined || users?.entry.permission !== undefined) {
    decidedBy = stricter(tools, users);
  } else if (defaults?.entry.permission !== undefined) {
    decidedBy = defaults;
  }
  const permission: Permission = decidedBy?.entry.permission ?? "deny";

  return {
    permission,
    decidedBy,
    hits,
    postTransform: strictestTransform(hits),
    buckets: bucketsOf(tenant.id, user, tool, tier, userTools, tools, users, defaults),
  };
}

function hit(table: TierTable | undefined, tier: Tier): LayerHit | null {
  return table?.get(tier) ?? null;
}

/** Of two cells that both apply, the one whose permission is stricter; a cell without one never wins. */
function stricter(a: LayerHit | null, b: LayerHit | null): LayerHit | null {
  const pa = a?.entry.permission;
  const pb = b?.entry.permission;
  if (pa === undefined) return pb === undefined ? null : b;
  if (pb === undefined) return a;
  return STRICTNESS[pb] > STRICTNESS[pa] ? b : a;
}

/**
 * The output transform: the strictest any matching cell sets (block > redact > audit), `audit` when none does.
 * Which layer decided the permission does not matter: a cell may only ever make the output safer.
 */
function strictestTransform(hits: readonly LayerHit[]): PostTransform {
  let out: PostTransform = "audit";
  for (const cell of hits) {
    const t = cell.entry.post_transform;
    if (t !== undefined && TRANSFORM_STRICTNESS[t] > TRANSFORM_STRICTNESS[out]) out = t;
  }
  return out;
}

/**
 * Buckets per CONTRACT.md: defaults and users count all of this human's calls in the tier; tools and
 * user_tools count this human's calls of the tool in the tier. Two layers counting the same calls share one
 * bucket with the lower limit.
 */
function bucketsOf(
  tenant: string,
  user: string,
  tool: string,
  tier: Tier,
  userTools: LayerHit | null,
  tools: LayerHit | null,
  users: LayerHit | null,
  defaults: LayerHit | null,
): Bucket[] {
  const out: Bucket[] = [];
  const base = `${tenant}\u0000${user}\u0000${tier}`;
  add(out, `${base}\u0000*`, users);
  add(out, `${base}\u0000*`, defaults);
  add(out, `${base}\u0000${tool}`, userTools);
  add(out, `${base}\u0000${tool}`, tools);
  return out;
}

function add(out: Bucket[], key: string, cell: LayerHit | null): void {
  const limit = cell?.entry.rate_limit_per_minute;
  if (limit === undefined || cell === null) return;
  const same = out.findIndex((b) => b.key === key);
  if (same === -1) out.push({ key, limit, source: cell.limitPath });
  else if (limit < out[same]!.limit) out[same] = { key, limit, source: cell.limitPath };
}
