/**
 * Verified tokens until their `exp`. An entry is found by the token's last characters (its signature's: a
 * lookup hashes 32 characters, not the whole token, which costs more than the rest of a hit when the token
 * arrives as a new string, as in every request) and served only when the whole token string is equal. Two
 * tokens ending alike share a slot: the later one takes it, the other is verified again when next seen. An
 * entry is never served at or after its expiry. Bounded: when full, the oldest entry goes.
 */
import type { Principal } from "./principal.js";

interface Entry {
  /** The whole token: a hit must be this exact string. */
  readonly token: string;
  readonly principal: Principal;
  /** ms since the epoch: the token's exp. */
  readonly expiresAt: number;
}

/** How many of a token's last characters find its slot. */
const KEY_CHARS = 32;

/** The slot of `token`: its last characters (the whole of a short one). */
function slotOf(token: string): string {
  return token.length <= KEY_CHARS * 2 ? token : token.slice(token.length - KEY_CHARS);
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
    const slot = slotOf(token);
    const entry = this.#entries.get(slot);
    if (entry === undefined || entry.token !== token) return undefined;
    if (nowMs < entry.expiresAt) return entry.principal;
    this.#entries.delete(slot);
    return undefined;
  }

  /** Cache `principal` for `token` until `expiresAt` (ms). Already-expired entries are not stored. */
  set(token: string, principal: Principal, expiresAt: number, nowMs: number): void {
    if (this.#max === 0 || !(nowMs < expiresAt)) return;
    const slot = slotOf(token);
    if (this.#entries.size >= this.#max && !this.#entries.has(slot)) {
      const oldest = this.#entries.keys().next();
      if (!oldest.done) this.#entries.delete(oldest.value);
    }
    this.#entries.set(slot, { token, principal, expiresAt });
  }

  /** Drop every cached token of one issuer (its keys changed). */
  evictIssuer(issuer: string): void {
    for (const [slot, entry] of this.#entries) {
      if (entry.principal.issuer === issuer) this.#entries.delete(slot);
    }
  }

  clear(): void {
    this.#entries.clear();
  }
}
