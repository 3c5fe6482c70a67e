/**
 * The shared state store on Redis, for several control-plane instances: pending calls and approvals as JSON
 * values with expiry, an index of approvals, atomic transitions in Lua, and the live config as a key plus a
 * pub/sub channel that tells the other instances to reload it.
 */
import { Redis } from "ioredis";
import { OnbehalfError } from "../errors.js";
import { type ApprovalStatus, type StoredApproval, withUpdate } from "../govern/approvals.js";
import { REDIS_OPTIONS, redisReady } from "../limits/redis.js";
import {
  DEFAULT_STATE_BOUNDS,
  type EvictedCall,
  type GoneReason,
  MAX_CONSOLE_SESSIONS_PER_OWNER,
  type OpenCall,
  type StateBounds,
  type StateStore,
} from "./state.js";

/**
 * Compare-and-set on an approval's status field (decoded, never matched as text: the requester's arguments
 * are in the same JSON). KEYS: the approval, the decided channel. ARGV: the status it must have, the fields to
 * set (JSON), its id. Returns the new JSON, or nil when the status is not the expected one.
 */
/**
 * Compare-and-set of an approval on its whole stored value: the client reads, checks the status and merges in
 * JavaScript; the script writes only if the value is still the one read. (Decoding in Lua would re-encode the
 * requester's arguments through cjson: large integers, empty arrays and key order would change, and with them
 * the argument digest the approval is bound to.)
 */
/** KEYS[1] the shared config; ARGV[1] the record expected there ("" for none), ARGV[2] the next one. */
const SAVE_CONFIG = `
local current = redis.call("GET", KEYS[1])
if (current or "") ~= ARGV[1] then return 0 end
redis.call("SET", KEYS[1], ARGV[2])
return 1
`;

/**
 * Lua: let call `id` go: remove its value, note why it went (for a late report), and add the value to `out`
 * (nothing when the value is gone already).
 */
const LET_GO = `
local function let_go(prefix, id, why, px, out)
  local v = redis.call('GET', prefix .. 'call:' .. id)
  if v then
    redis.call('DEL', prefix .. 'call:' .. id)
    redis.call('ZREM', prefix .. 'calls-of:' .. cjson.decode(v).user, id)
    redis.call('SET', prefix .. 'gone:' .. id, why, 'PX', px)
    table.insert(out, v)
  end
end
`;

/**
 * Calls waiting for their result: a JSON value each (`call:<id>`), an index by deadline (`calls`, a sorted
 * set), and one per user (`calls-of:<user>`). The value outlives its deadline by a margin so that the instance
 * that expires it can still audit it. Letting a call go removes it from its user's index (the value names the
 * user).
 *
 * PUT_CALL: KEYS the value, the index, the user's index. ARGV id, JSON, deadline, PX of the value, the bound,
 * prefix, PX of the "gone" note, the user's bound. At the user's bound, that user's calls nearest their deadline
 * go; at the bound of all, the calls of anyone nearest theirs (the oldest, for one TTL). Returns the two lists.
 */
const PUT_CALL = `${LET_GO}
local mine, all = {}, {}
local over = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[8]) + 1
if over > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, over - 1)) do
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    let_go(ARGV[6], id, 'user_bound', ARGV[7], mine)
  end
end
over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5]) + 1
if over > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, over - 1)) do
    redis.call('ZREM', KEYS[2], id)
    let_go(ARGV[6], id, 'evicted', ARGV[7], all)
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return {mine, all}
`;

/**
 * KEYS the value, the index; ARGV id, now, "1" to take it, prefix. A call past its deadline is not returned.
 */
const GET_CALL = `
local v = redis.call('GET', KEYS[1])
if not v then return false end
local deadline = redis.call('ZSCORE', KEYS[2], ARGV[1])
if deadline and tonumber(deadline) <= tonumber(ARGV[2]) then return false end
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', ARGV[4] .. 'calls-of:' .. cjson.decode(v).user, ARGV[1])
end
return v
`;

/** KEYS the index; ARGV now, limit, prefix, PX of the "gone" note. Removes and returns calls past their deadline. */
const EXPIRE_CALLS = `${LET_GO}
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))) do
  redis.call('ZREM', KEYS[1], id)
  let_go(ARGV[3], id, 'expired', ARGV[4], out)
end
return out
`;

/**
 * KEYS the approvals index, the requester's index; ARGV the bound, prefix, the requester's bound. Drops the
 * requester's oldest approvals beyond their bound, then anyone's oldest beyond the bound of all.
 */
const TRIM_APPROVALS = `
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if over > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #popped, 2 do
    redis.call('DEL', ARGV[2] .. 'approval:' .. popped[i])
    redis.call('ZREM', KEYS[1], popped[i])
  end
end
over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[1])
if over > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[1], over)
  for i = 1, #popped, 2 do
    local v = redis.call('GET', ARGV[2] .. 'approval:' .. popped[i])
    if v then redis.call('ZREM', ARGV[2] .. 'approvals-of:' .. cjson.decode(v).user, popped[i]) end
    redis.call('DEL', ARGV[2] .. 'approval:' .. popped[i])
  end
end
return 0
`;

/**
 * Store a console session (KEYS[1], ARGV[1] for ARGV[2] ms) and list it among its owner's (KEYS[2], scored by
 * when it opened, ARGV[3] ms); past ARGV[4] of the owner's sessions that are still there, the oldest end.
 * ARGV[5]: the hash, ARGV[6]: the key prefix.
 */
const PUT_CONSOLE_SESSION = `
for _, h in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if redis.call('EXISTS', ARGV[6] .. 'console:' .. h) == 0 then redis.call('ZREM', KEYS[2], h) end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
-- opened after every session listed, even within the same millisecond: the oldest is the first to end
local newest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')[2]
local at = tonumber(ARGV[3])
if newest and tonumber(newest) >= at then at = tonumber(newest) + 1 end
redis.call('ZADD', KEYS[2], at, ARGV[5])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if over > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #popped, 2 do redis.call('DEL', ARGV[6] .. 'console:' .. popped[i]) end
end
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 0
`;

/** How long a call's value outlives its deadline, so that the instance expiring it can still audit it. */
const AUDIT_MARGIN_MS = 10 * 60_000;

const TRANSITION = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
redis.call('PUBLISH', KEYS[2], ARGV[3])
return 1
`;

/**
 * Open the Redis state store.
 *
 * @example
 * const state = await createRedisState("redis://127.0.0.1:6379");
 */
export async function createRedisState(
  url: string,
  options: {
    prefix?: string;
    startupTimeoutMs?: number;
    bounds?: StateBounds;
    /** How long the reason a call went (expired, evicted) is kept for a late report. Default 5 minutes. */
    goneMs?: number;
  } = {},
): Promise<StateStore> {
  const bounds = options.bounds ?? DEFAULT_STATE_BOUNDS;
  const goneMs = options.goneMs ?? 5 * 60_000;
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
  redis.defineCommand("onbehalfTransition", { numberOfKeys: 2, lua: TRANSITION });
  redis.defineCommand("onbehalfPutCall", { numberOfKeys: 3, lua: PUT_CALL });
  redis.defineCommand("onbehalfGetCall", { numberOfKeys: 2, lua: GET_CALL });
  redis.defineCommand("onbehalfExpireCalls", { numberOfKeys: 1, lua: EXPIRE_CALLS });
  redis.defineCommand("onbehalfTrimApprovals", { numberOfKeys: 2, lua: TRIM_APPROVALS });
  redis.defineCommand("onbehalfPutConsoleSession", { numberOfKeys: 2, lua: PUT_CONSOLE_SESSION });
  type Scripts = Redis & {
    onbehalfPutCall(...a: (string | number)[]): Promise<[string[], string[]]>;
    onbehalfGetCall(...a: (string | number)[]): Promise<string | null>;
    onbehalfExpireCalls(...a: (string | number)[]): Promise<string[]>;
    onbehalfTrimApprovals(...a: (string | number)[]): Promise<number>;
    onbehalfPutConsoleSession(...a: (string | number)[]): Promise<number>;
  };
  const scripts = redis as Scripts;
  type WithTransition = Redis & {
    onbehalfTransition(key: string, channel: string, read: string, next: string, id: string): Promise<number>;
  };
  const k = {
    call: (id: string) => `${prefix}call:${id}`,
    calls: `${prefix}calls`,
    callsOf: (user: string) => `${prefix}calls-of:${user}`,
    gone: (id: string) => `${prefix}gone:${id}`,
    approval: (id: string) => `${prefix}approval:${id}`,
    binding: (binding: string) => `${prefix}approval-for:${binding}`,
    approvals: `${prefix}approvals`,
    approvalsOf: (user: string) => `${prefix}approvals-of:${user}`,
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

  const waiters = new Map<string, Set<(a: StoredApproval) => void>>();
  const configListeners: ((snapshot: string) => void)[] = [];
  const instance = Math.random().toString(36).slice(2);
  sub.on("message", (channel: string, message: string) => {
    if (channel === k.decided) {
      for (const w of waiters.get(message) ?? []) {
        redis.get(k.approval(message)).then(
          (json) => {
            const a = parse<StoredApproval>(json);
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
      guard("store a pending call", async () => {
        const deadline = Date.now() + ttlMs;
        const [mine, all] = await scripts.onbehalfPutCall(
          k.call(call.callId),
          k.calls,
          k.callsOf(call.user),
          call.callId,
          JSON.stringify(call),
          deadline,
          ttlMs + AUDIT_MARGIN_MS,
          bounds.maxCalls,
          prefix,
          goneMs,
          bounds.maxCallsPerUser,
        );
        const gone = (values: string[], why: EvictedCall["why"]) =>
          values.map((v) => ({ call: JSON.parse(v) as OpenCall, why }));
        return [...gone(mine, "user_bound"), ...gone(all, "evicted")];
      }),
    getCall: (id) =>
      guard("read a pending call", async () =>
        parse<OpenCall>(await scripts.onbehalfGetCall(k.call(id), k.calls, id, Date.now(), "0", prefix)),
      ),
    takeCall: (id) =>
      guard("take a pending call", async () =>
        parse<OpenCall>(await scripts.onbehalfGetCall(k.call(id), k.calls, id, Date.now(), "1", prefix)),
      ),
    expireCalls: (limit) =>
      guard("expire pending calls", async () =>
        (await scripts.onbehalfExpireCalls(k.calls, Date.now(), limit, prefix, goneMs)).map(
          (v) => JSON.parse(v) as OpenCall,
        ),
      ),
    claimReport: (id, ttlMs) =>
      guard(
        "claim a report",
        async () =>
          (await redis.set(`${prefix}reported:${id}`, "1", "PX", Math.max(1, ttlMs), "NX")) === "OK",
      ),
    goneWhy: (id) =>
      guard("read why a call went", async () => (await redis.get(k.gone(id))) as GoneReason | null),
    putApproval: (a, binding, ttlMs) =>
      guard("store an approval", async () => {
        await redis
          .multi()
          .set(k.approval(a.id), JSON.stringify(a), "PX", ttlMs)
          .set(k.binding(binding), a.id, "PX", ttlMs)
          .zadd(k.approvals, Date.parse(a.created_at), a.id)
          .zadd(k.approvalsOf(a.user), Date.parse(a.created_at), a.id)
          .pexpire(k.approvalsOf(a.user), ttlMs)
          .exec();
        await scripts.onbehalfTrimApprovals(
          k.approvals,
          k.approvalsOf(a.user),
          bounds.maxApprovals,
          prefix,
          bounds.maxApprovalsPerUser,
        );
      }),
    getApproval: (id) =>
      guard("read an approval", async () => parse<StoredApproval>(await redis.get(k.approval(id)))),
    findApproval: (binding) =>
      guard("find an approval", async () => {
        const id = await redis.get(k.binding(binding));
        return id === null ? null : parse<StoredApproval>(await redis.get(k.approval(id)));
      }),
    listApprovals: (status?: ApprovalStatus) =>
      guard("list approvals", async () => {
        const ids = await redis.zrange(k.approvals, "0", "-1");
        if (ids.length === 0) return [];
        const values = await redis.mget(...ids.map(k.approval));
        const gone = ids.filter((_, i) => values[i] === null);
        if (gone.length > 0) await redis.zrem(k.approvals, ...gone);
        return values
          .map((v) => parse<StoredApproval>(v))
          .filter((a): a is StoredApproval => a !== null && (status === undefined || a.status === status));
      }),
    transitionApproval: (id, from, update) =>
      guard("change an approval", async () => {
        // Another writer between the read and the write: read again (its status has changed, so this is
        // normally a miss). Bounded: a value that keeps changing is not ours to change.
        for (let attempt = 0; attempt < 8; attempt++) {
          const read = await redis.get(k.approval(id));
          const current = parse<StoredApproval>(read);
          if (read === null || current === null || current.status !== from) return null;
          const next: StoredApproval = withUpdate(current, update);
          const json = JSON.stringify(next);
          if (
            (await (redis as WithTransition).onbehalfTransition(
              k.approval(id),
              k.decided,
              read,
              json,
              id,
            )) === 1
          )
            return next;
        }
        return null;
      }),
    waitApproval: async (id, timeoutMs, signal) => {
      const current = await store.getApproval(id);
      if (current === null || current.status !== "pending" || timeoutMs <= 0 || signal?.aborted)
        return current;
      return new Promise<StoredApproval | null>((resolve) => {
        const set = waiters.get(id) ?? new Set();
        waiters.set(id, set);
        const done = (a: StoredApproval) => {
          if (a.status === "pending") return;
          clearTimeout(timer);
          set.delete(done);
          signal?.removeEventListener("abort", ended);
          resolve(a);
        };
        const ended = () => {
          clearTimeout(timer);
          set.delete(done);
          store.getApproval(id).then(resolve, () => resolve(current));
        };
        const timer = setTimeout(ended, timeoutMs);
        signal?.addEventListener("abort", ended, { once: true });
        set.add(done);
      });
    },
    saveConfig: (next, previous) =>
      guard("share the config", async () => {
        // Compare and set on the whole record: a change made meanwhile by another instance is never overwritten.
        const saved = await redis.eval(SAVE_CONFIG, 1, k.config, previous ?? "", next);
        if (saved !== 1) return false;
        await redis.publish(k.configChannel, `${instance}:${Date.now()}`);
        return true;
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
    claimOnce: (key, ttlMs) =>
      guard(
        "claim a value used once",
        async () => (await redis.set(`${prefix}once:${key}`, "1", "PX", Math.max(1, ttlMs), "NX")) === "OK",
      ),
    putConsoleSession: (hash, session, ttlMs, owner) =>
      guard("store a console session", async () => {
        await scripts.onbehalfPutConsoleSession(
          `${prefix}console:${hash}`,
          `${prefix}console-of:${owner}`,
          session,
          Math.max(1, ttlMs),
          Date.now(),
          MAX_CONSOLE_SESSIONS_PER_OWNER,
          hash,
          prefix,
        );
      }),
    getConsoleSession: (hash) =>
      guard("read a console session", async () => redis.get(`${prefix}console:${hash}`)),
    deleteConsoleSession: (hash) =>
      guard("end a console session", async () => {
        await redis.del(`${prefix}console:${hash}`);
      }),
    ping: () => guard("answer", async () => void (await redis.ping())),
    async close() {
      redis.disconnect();
      sub.disconnect();
    },
  };
  return store;
}
