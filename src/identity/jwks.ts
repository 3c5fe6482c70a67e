/**
 * One issuer's public keys: inline, from `jwks_uri`, or from the `jwks_uri` that discovery finds.
 *
 * - Keys are cached for `jwks_cache_seconds`; stale keys are refetched before use (fail closed: if the
 *   refetch fails, verification fails with `ERR_JWKS_UNAVAILABLE`).
 * - A token naming an unknown kid causes a refetch at most once per `jwks_cooldown_seconds`, so a flood of
 *   tokens with made-up kids costs the IdP at most one request per cooldown.
 * - Concurrent refetches share one in-flight request (single flight).
 * - After a failed fetch, further attempts wait min(cooldown, 5 s) and fail fast meanwhile.
 * - When a refetch shows that a key we had is gone, `onKeysRemoved` runs (the verifier evicts the issuer's
 *   cached tokens, so a removed key stops working at once).
 * - JWKs that cannot be imported or are not signing keys for an allowed algorithm are skipped, not fatal.
 * - One fast-jwt verifier per key, built when the key is loaded and reused while the key stays.
 */

import type { Algorithm, IssuerConfig } from "../config/issuer.js";
import { OnbehalfError } from "../errors.js";
import { discover } from "./discovery.js";
import { fetchJsonObject } from "./http.js";
import {
  importJwk,
  indexKeys,
  type KeyIndex,
  type KeySelection,
  selectKey,
  type VerificationKey,
} from "./jwk.js";
import { createJwtVerifier, type JwtSignatureVerifier } from "./jws.js";

/** A usable key and the verifier built for it. */
export interface KeyEntry {
  readonly key: VerificationKey;
  readonly verify: JwtSignatureVerifier;
}

/** Options of {@link IssuerKeySet}. */
export interface KeySetOptions {
  readonly config: IssuerConfig;
  /** The asymmetric algorithms the issuer allows. */
  readonly algorithms: readonly Algorithm[];
  readonly fetch: typeof fetch;
  /** Clock, ms. */
  readonly now: () => number;
  readonly signal: AbortSignal;
  readonly onKeysRemoved: () => void;
}

const MAX_FAILURE_BACKOFF_MS = 5_000;
const EMPTY: KeyIndex<KeyEntry> = { all: [], byKid: new Map() };

/**
 * The key set of one issuer.
 *
 * @example
 * const keys = new IssuerKeySet({ config, algorithms: ["RS256"], fetch, now: Date.now, signal, onKeysRemoved });
 * const entry = await keys.resolve(kid, "RS256");
 * const payload = entry.verify(token);
 */
export class IssuerKeySet {
  readonly remote: boolean;
  #index: KeyIndex<KeyEntry> = EMPTY;
  #skipped: readonly string[] = [];
  #expiresAt = 0;
  #lastFetchAt = Number.NEGATIVE_INFINITY;
  #failedUntil = 0;
  #lastError: OnbehalfError | null = null;
  #inflight: Promise<void> | null = null;
  #jwksUri: string | null;
  #fetches = 0;
  readonly #options: KeySetOptions;
  readonly #cacheMs: number;
  readonly #cooldownMs: number;

  constructor(options: KeySetOptions) {
    this.#options = options;
    const { config } = options;
    this.#cacheMs = config.jwks_cache_seconds * 1000;
    this.#cooldownMs = config.jwks_cooldown_seconds * 1000;
    this.#jwksUri = config.jwks_uri;
    this.remote = config.jwks === undefined;
    if (config.jwks !== undefined) {
      this.#index = this.#build(config.jwks.keys);
      this.#expiresAt = Number.POSITIVE_INFINITY;
    }
  }

  /** JWKS HTTP requests made so far (discovery not included). */
  get fetches(): number {
    return this.#fetches;
  }

  /** Usable keys now loaded. */
  get size(): number {
    return this.#index.all.length;
  }

  /** Until when (ms) the loaded keys count as fresh; Infinity for inline keys. */
  get freshUntil(): number {
    return this.#expiresAt;
  }

  /** Why JWKs of the last load were skipped. */
  get skipped(): readonly string[] {
    return this.#skipped;
  }

  /**
   * Synchronous fast path: the selection among fresh keys, or undefined when the keys are stale or not
   * loaded yet (then call {@link resolve}).
   */
  lookup(kid: string | undefined, alg: string): KeySelection<KeyEntry> | undefined {
    if (this.#options.now() >= this.#expiresAt) return undefined;
    return selectKey(this.#index, kid, alg);
  }

  /** The key for a token's kid and alg, fetching the key set when it is stale or the kid is new. */
  async resolve(kid: string | undefined, alg: string): Promise<KeyEntry> {
    let refreshed = false;
    if (this.#options.now() >= this.#expiresAt) {
      await this.refresh();
      refreshed = true;
    }
    let selection = selectKey(this.#index, kid, alg);
    if ("entry" in selection) return selection.entry;
    const missing = selection.problem === "unknown-kid" || selection.problem === "no-key";
    if (this.remote && missing && !refreshed) {
      const coolingDown = this.#options.now() - this.#lastFetchAt < this.#cooldownMs;
      if (this.#inflight !== null || !coolingDown) {
        await this.refresh();
        selection = selectKey(this.#index, kid, alg);
        if ("entry" in selection) return selection.entry;
      } else {
        selection = {
          ...selection,
          detail: `${selection.detail} (key set refetched less than ${this.#cooldownMs / 1000} s ago)`,
        };
      }
    }
    throw new OnbehalfError(
      selection.problem === "wrong-type" ? "ERR_TOKEN_ALG_NOT_ALLOWED" : "ERR_JWKS_NO_MATCHING_KEY",
      `${selection.detail} for issuer "${this.#options.config.issuer}"` +
        (this.#skipped.length > 0 ? `; skipped keys: ${this.#skipped.join("; ")}` : ""),
    );
  }

  /** Refetch the key set now (single flight: concurrent callers share one request). */
  refresh(): Promise<void> {
    if (!this.remote) return Promise.resolve();
    this.#inflight ??= this.#load().finally(() => {
      this.#inflight = null;
    });
    return this.#inflight;
  }

  async #load(): Promise<void> {
    const { config, now, signal } = this.#options;
    if (now() < this.#failedUntil && this.#lastError !== null) throw this.#lastError;
    this.#lastFetchAt = now();
    try {
      this.#jwksUri ??= (
        await discover(config.issuer, {
          fetch: this.#options.fetch,
          allowInsecureHttp: config.allow_insecure_http,
          signal,
        })
      ).jwks_uri;
      this.#fetches++;
      const doc = await fetchJsonObject(this.#jwksUri, {
        fetch: this.#options.fetch,
        what: `the JWKS of issuer "${config.issuer}"`,
        code: "ERR_JWKS_UNAVAILABLE",
        allowInsecureHttp: config.allow_insecure_http,
        signal,
      });
      if (!Array.isArray(doc["keys"])) {
        throw new OnbehalfError(
          "ERR_JWKS_UNAVAILABLE",
          `${this.#jwksUri} is not a JWK Set (no "keys" array)`,
        );
      }
      const next = this.#build(doc["keys"]);
      const kept = new Set(next.all.map((e) => e.key.thumbprint));
      const removed = this.#index.all.some((e) => !kept.has(e.key.thumbprint));
      this.#index = next;
      this.#expiresAt = now() + this.#cacheMs;
      this.#failedUntil = 0;
      this.#lastError = null;
      if (removed) this.#options.onKeysRemoved();
    } catch (e) {
      const error =
        e instanceof OnbehalfError
          ? e
          : new OnbehalfError("ERR_JWKS_UNAVAILABLE", `cannot load the keys of issuer "${config.issuer}"`, {
              cause: e,
            });
      this.#lastError = error;
      this.#failedUntil = now() + Math.min(this.#cooldownMs, MAX_FAILURE_BACKOFF_MS);
      this.#jwksUri = config.jwks_uri; // rediscover next time: the IdP may have moved its keys
      throw error;
    }
  }

  #build(jwks: readonly unknown[]): KeyIndex<KeyEntry> {
    const previous = new Map(this.#index.all.map((e) => [entryId(e.key), e]));
    const allowed = new Set<string>(this.#options.algorithms);
    const entries: KeyEntry[] = [];
    const skipped: string[] = [];
    for (const jwk of jwks) {
      const imported = importJwk(jwk);
      if ("skipped" in imported) {
        skipped.push(imported.skipped);
        continue;
      }
      const algorithms = imported.key.algorithms.filter((a) => allowed.has(a));
      if (algorithms.length === 0) {
        skipped.push(
          `key ${imported.key.kid ?? imported.key.thumbprint}: ${imported.key.algorithms.join("/")} not in algorithms`,
        );
        continue;
      }
      const key: VerificationKey = { ...imported.key, algorithms };
      const reused = previous.get(entryId(key));
      if (reused) {
        entries.push(reused);
        continue;
      }
      try {
        entries.push({ key, verify: createJwtVerifier(key.pem, algorithms) });
      } catch (e) {
        skipped.push(`key ${key.kid ?? key.thumbprint}: ${(e as Error).message}`);
      }
    }
    this.#skipped = skipped;
    return indexKeys(entries);
  }
}

function entryId(key: VerificationKey): string {
  return `${key.thumbprint}|${key.kid ?? ""}|${key.algorithms.join(",")}`;
}
