/**
 * The shared state store on Redis, for several control-plane instances: pending calls and approvals as JSON
 * values with expiry, an index of approvals, atomic transitions in Lua, and the live config as a key plus a
 * pub/sub channel that tells the other instances to reload it.
 */
import { Redis } from "ioredis";
import { OnbehalfError } from "../errors.js";
import { REDIS_OPTIONS, redisReady } from "../limits/redis.js";
import type { Approval, ApprovalStatus, PendingCall, StateStore } from "./state.js";

/** Set the approval's JSON to ARGV[1] only if it is still pending. */
const DECIDE = `
local current = redis.call('GET', KEYS[1])
if not current then return nil end
if not string.find(current, '"status":"pending"', 1, true) then return nil end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl) else redis.call('SET', KEYS[1], ARGV[1]) end
redis.call('PUBLISH', KEYS[2], ARGV[2])
return ARGV[1]
`;

/**
 * Open the Redis state store.
 *
 * @example
 * const state = await createRedisState("redis://127.0.0.1:6379");
 */
export async function createRedisState(
  url: string,
  options: { prefix?: string; startupTimeoutMs?: number } = {},
): Promise<StateStore> {
  const prefix = options.prefix ?? "onbehalf:";
  const redis = new Redis(url, { ...REDIS_OPTIONS, commandTimeout: 1_000 });
  const sub = new Redis(url, { ...REDIS_OPTIONS, enableOfflineQueue: true });
  redis.on("error", () => {});
  sub.on("error", () => {});
  // A peer starting at the same moment, or Redis still coming up, is waited for (bounded), never a crash.
  try {
    await redisReady(redis, "the state store", url, options.startupTimeoutMs ?? 30_000);
  } catch (e) {
    redis.disconnect();
    sub.disconnect();
    throw e;
  }
  redis.defineCommand("onbehalfDecide", { numberOfKeys: 2, lua: DECIDE });
  type WithDecide = Redis & {
    onbehalfDecide(key: string, channel: string, json: string, id: string): Promise<string | null>;
  };
  const k = {
    call: (id: string) => `${prefix}call:${id}`,
    approval: (id: string) => `${prefix}approval:${id}`,
    approvals: `${prefix}approvals`,
    decided: `${prefix}approval-decided`,
    config: `${prefix}config`,
    configChannel: `${prefix}config-changed`,
  };
  const guard = async <T>(what: string, f: () => Promise<T>): Promise<T> => {
    try {
      return await f();
    } catch (e) {
      throw new OnbehalfError(
        "ERR_LIMITS_UNAVAILABLE",
        `the state store (Redis) could not ${what}: ${(e as Error).message}`,
        {
          cause: e,
        },
      );
    }
  };
  const parse = <T>(json: string | null): T | null => (json === null ? null : (JSON.parse(json) as T));

  const waiters = new Map<string, Set<(a: Approval) => void>>();
  const configListeners: ((snapshot: string) => void)[] = [];
  const instance = Math.random().toString(36).slice(2);
  sub.on("message", (channel: string, message: string) => {
    if (channel === k.decided) {
      for (const w of waiters.get(message) ?? []) {
        redis.get(k.approval(message)).then(
          (json) => {
            const a = parse<Approval>(json);
            if (a !== null) w(a);
          },
          () => {},
        );
      }
    } else if (channel === k.configChannel && !message.startsWith(`${instance}:`)) {
      redis.get(k.config).then(
        (snapshot) => {
          if (snapshot !== null) for (const l of configListeners) l(snapshot);
        },
        () => {},
      );
    }
  });
  await sub.subscribe(k.decided, k.configChannel);

  const store: StateStore = {
    putCall: (call, ttlMs) =>
      guard(
        "store a pending call",
        async () => void (await redis.set(k.call(call.callId), JSON.stringify(call), "PX", ttlMs)),
      ),
    getCall: (id) =>
      guard("read a pending call", async () => parse<PendingCall>(await redis.get(k.call(id)))),
    takeCall: (id) =>
      guard("take a pending call", async () => parse<PendingCall>(await redis.getdel(k.call(id)))),
    putApproval: (a, ttlMs) =>
      guard("store an approval", async () => {
        await redis
          .multi()
          .set(k.approval(a.id), JSON.stringify(a), "PX", ttlMs)
          .zadd(k.approvals, Date.parse(a.created_at), a.id)
          .exec();
      }),
    getApproval: (id) =>
      guard("read an approval", async () => parse<Approval>(await redis.get(k.approval(id)))),
    listApprovals: (status?: ApprovalStatus) =>
      guard("list approvals", async () => {
        const ids = await redis.zrange(k.approvals, "0", "-1");
        if (ids.length === 0) return [];
        const values = await redis.mget(...ids.map(k.approval));
        const gone = ids.filter((_, i) => values[i] === null);
        if (gone.length > 0) await redis.zrem(k.approvals, ...gone);
        return values
          .map((v) => parse<Approval>(v))
          .filter((a): a is Approval => a !== null && (status === undefined || a.status === status));
      }),
    decideApproval: (id, update) =>
      guard("decide an approval", async () => {
        const current = parse<Approval>(await redis.get(k.approval(id)));
        if (current === null || current.status !== "pending") return null;
        const next: Approval = { ...current, ...update };
        const written = await (redis as WithDecide).onbehalfDecide(
          k.approval(id),
          k.decided,
          JSON.stringify(next),
          id,
        );
        return written === null ? null : next;
      }),
    waitApproval: async (id, timeoutMs) => {
      const current = await store.getApproval(id);
      if (current === null || current.status !== "pending" || timeoutMs <= 0) return current;
      return new Promise<Approval | null>((resolve) => {
        const set = waiters.get(id) ?? new Set();
        waiters.set(id, set);
        const done = (a: Approval) => {
          if (a.status === "pending") return;
          clearTimeout(timer);
          set.delete(done);
          resolve(a);
        };
        const timer = setTimeout(() => {
          set.delete(done);
          store.getApproval(id).then(resolve, () => resolve(current));
        }, timeoutMs);
        set.add(done);
      });
    },
    saveConfig: (snapshot) =>
      guard("share the config", async () => {
        await redis.set(k.config, snapshot);
        await redis.publish(k.configChannel, `${instance}:${Date.now()}`);
      }),
    loadConfig: () => guard("read the shared config", () => redis.get(k.config)),
    onConfig(listener) {
      configListeners.push(listener);
    },
    claimSpooled: (callId) =>
      guard(
        "claim a spooled record",
        async () => (await redis.set(`${prefix}spooled:${callId}`, "1", "PX", 60_000, "NX")) === "OK",
      ),
    ping: () => guard("answer", async () => void (await redis.ping())),
    async close() {
      redis.disconnect();
      sub.disconnect();
    },
  };
  return store;
}
