/**
 * Rate limits shared by several instances: the same sliding-window counter as the memory store, kept in
 * Redis and decided atomically by one Lua script per call (check every bucket, then count in all or none).
 * If Redis cannot answer, `take` throws `ERR_LIMITS_UNAVAILABLE` and the call is denied (fail closed).
 */
import { Redis } from "ioredis";
import type { Bucket } from "../decision.js";
import { OnbehalfError } from "../errors.js";
import { redactUrl, waitFor } from "../retry.js";
import { type RateLimiter, WINDOW_MS } from "./window.js";

/**
 * KEYS: per bucket, its current-window key then its previous-window key.
 * ARGV: now offset into the current window (ms), the window (ms), then one limit per bucket.
 * Returns 0 when counted, else the 1-based index of the first full bucket.
 */
const TAKE = `
local offset = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local overlap = (window - offset) / window
local n = #KEYS / 2
for i = 1, n do
  local current = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local previous = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  if previous * overlap + current + 1 > tonumber(ARGV[2 + i]) then return i end
end
for i = 1, n do
  redis.call('INCR', KEYS[2 * i - 1])
  redis.call('PEXPIRE', KEYS[2 * i - 1], window * 2 + 1000)
end
return 0
`;

/** Connection settings every onbehalf Redis client uses: fail fast per command, reconnect for ever. */
export const REDIS_OPTIONS = {
  maxRetriesPerRequest: 1,
  enableOfflineQueue: false,
  connectTimeout: 2_000,
  retryStrategy: (times: number) => Math.min(times * 100, 2_000),
} as const;

/**
 * Wait until `redis` answers a PING, for at most `timeoutMs`; the error names `what` and the URL (no password).
 * Commands sent before the connection is up fail at once (the offline queue is off, so a call never hangs):
 * callers that need Redis at start wait here first.
 *
 * @example
 * await redisReady(redis, "the rate-limit store", url, 30_000);
 */
export function redisReady(redis: Redis, what: string, url: string, timeoutMs: number): Promise<void> {
  return waitFor(
    `${what} (Redis at ${redactUrl(url)})`,
    async () => {
      try {
        await redis.ping();
      } catch (e) {
        throw new OnbehalfError("ERR_LIMITS_UNAVAILABLE", (e as Error).message, { cause: e });
      }
    },
    { timeoutMs, code: "ERR_LIMITS_UNAVAILABLE" },
  );
}

export interface RedisLimiterOptions {
  /** Prefix of every key, so several deployments can share one Redis. Default `onbehalf:rl:`. */
  readonly prefix?: string;
  /** Give up on Redis after this long and fail closed. Default 500 ms. */
  readonly timeoutMs?: number;
}

/**
 * Create a limiter on Redis.
 *
 * @example
 * const limiter = createRedisLimiter("redis://127.0.0.1:6379");
 */
export function createRedisLimiter(
  url: string,
  options: RedisLimiterOptions = {},
): RateLimiter & { readonly redis: Redis } {
  const prefix = options.prefix ?? "onbehalf:rl:";
  const timeoutMs = options.timeoutMs ?? 500;
  const redis = new Redis(url, { ...REDIS_OPTIONS, commandTimeout: timeoutMs });
  redis.on("error", () => {}); // reported per call as ERR_LIMITS_UNAVAILABLE; ioredis reconnects by itself
  redis.defineCommand("onbehalfTake", { lua: TAKE });
  type WithTake = Redis & { onbehalfTake(...args: (string | number)[]): Promise<number> };

  return {
    redis,
    async take(buckets: readonly Bucket[], now: number): Promise<Bucket | null> {
      const start = now - (now % WINDOW_MS);
      const keys: string[] = [];
      for (const b of buckets) {
        const key = prefix + Buffer.from(b.key).toString("base64url");
        keys.push(`${key}:${start}`, `${key}:${start - WINDOW_MS}`);
      }
      let full: number;
      try {
        full = await (redis as WithTake).onbehalfTake(
          keys.length,
          ...keys,
          now - start,
          WINDOW_MS,
          ...buckets.map((b) => b.limit),
        );
      } catch (e) {
        throw new OnbehalfError(
          "ERR_LIMITS_UNAVAILABLE",
          `the rate-limit store (Redis) did not answer: ${(e as Error).message}`,
          {
            cause: e,
          },
        );
      }
      return full === 0 ? null : (buckets[full - 1] ?? null);
    },
    async close() {
      redis.disconnect();
    },
  };
}
