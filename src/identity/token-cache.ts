/**
 * Verified tokens, keyed by the exact token string, until their `exp`. The hit path is one Map lookup and
 * one comparison; an entry is never served at or after its expiry. Bounded: when full, the oldest entry goes.
 */
import type { Principal } from "./principal.js";

interface Entry {
  readonly principal: Principal;
  /** ms since the epoch: the token's exp. */
  readonly expiresAt: number;
}

/** Default number of cached tokens. */
export const DEFAULT_TOKEN_CACHE_SIZE = 10_000;

/**
 * A bounded cache of verified tokens.
 *
 * @example
 * const cache = new TokenCache(10_000);
 * cache.set(token, principal, principal.exp * 1000);
 * cache.get(token, Date.now()); // principal, until exp
 */
export class TokenCache {
  readonly #entries = new Map<string, Entry>();
  readonly #max: number;

  constructor(maxEntries: number = DEFAULT_TOKEN_CACHE_SIZE) {
    this.#max = Math.max(0, Math.floor(maxEntries));
  }

  get size(): number {
    return this.#entries.size;
  }

  /** The cached principal for `token`, or undefined (expired entries are dropped). */
  get(token: string, nowMs: number): Principal | undefined {
    const entry = this.#entries.get(token);
    if (entry === undefined) return undefined;
    if (nowMs < entry.expiresAt) return entry.principal;
    this.#entries.delete(token);
    return undefined;
  }

  /** Cache `principal` for `token` until `expiresAt` (ms). Already-expired entries are not stored. */
  set(token: string, principal: Principal, expiresAt: number, nowMs: number): void {
    if (this.#max === 0 || !(nowMs < expiresAt)) return;
    if (this.#entries.size >= this.#max && !this.#entries.has(token)) {
      const oldest = this.#entries.keys().next();
      if (!oldest.done) this.#entries.delete(oldest.value);
    }
    this.#entries.set(token, { principal, expiresAt });
  }

  /** Drop every cached token of one issuer (its keys changed). */
  evictIssuer(issuer: string): void {
    for (const [token, entry] of this.#entries) {
      if (entry.principal.issuer === issuer) this.#entries.delete(token);
    }
  }

  clear(): void {
    this.#entries.clear();
  }
}
