/**
 * Token verification: from a bearer token to a `Principal`, or an `OnbehalfError` with a stable code.
 *
 * The path of one token:
 * 1. token cache (exact token string → principal, until `exp` or until the issuer's keys go stale): a hit
 *    returns at once;
 * 2. size limit, then the compact shape and canonical base64url (`header.ts`), before any decoding;
 * 3. with several issuers, the unverified `iss` picks the issuer (unknown → `ERR_TOKEN_ISSUER_UNKNOWN`);
 * 4. header checks: allowed `alg` (exact), no `jwk`/`jku`/`x5u`/`x5c`/`b64`/`crit`, `typ` when required;
 * 5. the key: by kid from the issuer's key set (`jwks.ts`), whose type must fit `alg`; HS* only with the
 *    issuer's secret;
 * 6. the signature: that key's synchronous fast-jwt verifier;
 * 7. the claims (`claims.ts`): `iss`, `exp`, `nbf`, `iat`, audience, subject; then the principal.
 * Any other failure is still an `OnbehalfError`: nothing raw escapes, nothing fails open.
 */

import type { IssuerConfig } from "../config/issuer.js";
import { OnbehalfError } from "../errors.js";
import { checkClaims, toPrincipal } from "./claims.js";
import { assertTokenSize, checkHeader, decodeJsonObject, splitCompact } from "./header.js";
import { type CheckedHeader, type IssuerContext, prepareIssuer } from "./issuers.js";
import type { JwtSignatureVerifier } from "./jws.js";
import type { Principal } from "./principal.js";
import { DEFAULT_TOKEN_CACHE_SIZE, TokenCache } from "./token-cache.js";

/** Options of {@link createIdentity}. */
export interface IdentityOptions {
  /** Trusted issuers, already validated by the `IssuerConfig` schema (defaults filled in). */
  readonly issuers: readonly IssuerConfig[];
  /** fetch for discovery and JWKS. Default: the global fetch. */
  readonly fetch?: typeof fetch;
  /** Clock in ms since the epoch. Default: Date.now. */
  readonly now?: () => number;
  /** Verified tokens kept in memory. Default 10,000; 0 disables the cache. */
  readonly tokenCacheSize?: number;
  /**
   * Issuers among `issuers` whose tokens onbehalf signs itself (delegation tokens): their `obo_issuer` claim
   * names the issuer that verified the human first (`Principal.origin`).
   */
  readonly carriers?: readonly string[];
}

/** Verifies bearer tokens against the trusted issuers. */
export interface Identity {
  /**
   * Verify a bare token (no `Bearer ` prefix).
   *
   * @example
   * const principal = await identity.verify(token);
   */
  verify(token: string): Promise<Principal>;
  /**
   * Verify an `Authorization` header value: `Bearer <token>`, scheme case-insensitive. Missing, empty or
   * another scheme: `ERR_TOKEN_MISSING`.
   *
   * @example
   * const principal = await identity.verifyAuthorization(req.headers.authorization);
   */
  verifyAuthorization(header: string | undefined | null): Promise<Principal>;
  /**
   * How many JWKS HTTP requests were made for an issuer (metrics, tests). 0 for an unknown issuer.
   *
   * @example
   * identity.jwksFetches("https://tenant.eu.auth0.com/"); // 1
   */
  jwksFetches(issuer: string): number;
  /** The trusted issuers, as configured. */
  readonly issuers: readonly string[];
  /**
   * Stop: abort in-flight fetches, drop cached tokens; later calls reject with `ERR_CLOSED`. Idempotent.
   *
   * @example
   * identity.close();
   */
  close(): void;
}

/**
 * Create a verifier for a set of trusted issuers. Configuration problems the schema cannot see (both
 * `jwks` and `jwks_uri`, a non-https issuer, an HS* secret that is too short, inline keys that are all
 * unusable, a duplicate issuer) throw `ERR_CONFIG_INVALID` here. Remote keys load on first use.
 *
 * @example
 * const identity = createIdentity({
 *   issuers: [IssuerConfig.parse({ issuer: "https://tenant.eu.auth0.com/", audience: "https://agents.example.com", preset: "auth0" })],
 * });
 * const principal = await identity.verifyAuthorization("Bearer eyJ…");
 */
export function createIdentity(options: IdentityOptions): Identity {
  return new TokenVerifier(options);
}

/** Distinct header segments remembered per issuer (then the memory starts over). */
const CHECKED_HEADERS_MAX = 64;

/** The size limit applied before an issuer is known, when none is trusted. */
const DEFAULT_MAX_TOKEN_BYTES = 16384;

class TokenVerifier implements Identity {
  readonly issuers: readonly string[];
  readonly #contexts = new Map<string, IssuerContext>();
  /** The issuer when exactly one is trusted: no need to read `iss` before verifying. */
  readonly #single: IssuerContext | undefined;
  readonly #maxBytes: number;
  readonly #cache: TokenCache;
  readonly #now: () => number;
  readonly #abort = new AbortController();
  #closed = false;

  constructor(options: IdentityOptions) {
    this.#now = options.now ?? Date.now;
    this.#cache = new TokenCache(options.tokenCacheSize ?? DEFAULT_TOKEN_CACHE_SIZE);
    const deps = {
      // Issuers that set their own prefix (the development issuer, onbehalf's delegation tokens) do not make
      // the others "several": configured issuers qualify their users only when there is more than one.
      issuerCount: options.issuers.filter((i) => i.user_prefix === undefined).length,
      fetch: options.fetch ?? globalThis.fetch,
      now: this.#now,
      signal: this.#abort.signal,
      onKeysRemoved: (issuer: string) => this.#cache.evictIssuer(issuer),
    };
    for (const config of options.issuers) {
      if (this.#contexts.has(config.issuer)) {
        throw new OnbehalfError("ERR_CONFIG_INVALID", `issuer "${config.issuer}" is listed twice`);
      }
      const carrier = options.carriers?.includes(config.issuer) === true;
      this.#contexts.set(config.issuer, prepareIssuer(config, { ...deps, carrier }));
    }
    this.issuers = [...this.#contexts.keys()];
    this.#single = this.#contexts.size === 1 ? this.#contexts.values().next().value : undefined;
    const limits = [...this.#contexts.values()].map((c) => c.maxTokenBytes);
    this.#maxBytes = limits.length > 0 ? Math.max(...limits) : DEFAULT_MAX_TOKEN_BYTES;
  }

  verify(token: string): Promise<Principal> {
    if (this.#closed) return Promise.reject(closedError());
    if (typeof token !== "string" || token === "") {
      return Promise.reject(new OnbehalfError("ERR_TOKEN_MISSING", "no token was given"));
    }
    const hit = this.#cache.get(token, this.#now());
    if (hit !== undefined) return Promise.resolve(hit);
    try {
      const result = this.#verifyUncached(token);
      if (!(result instanceof Promise)) return Promise.resolve(result);
      return result.catch((e: unknown) => {
        throw this.#closed ? closedError() : asOnbehalfError(e);
      });
    } catch (e) {
      return Promise.reject(asOnbehalfError(e));
    }
  }

  verifyAuthorization(header: string | undefined | null): Promise<Principal> {
    // The hot path: `Bearer <a token verified before>`. A cached token passed every check below when it was
    // verified, and the cache compares the whole string, so a hit needs none of them again.
    if (typeof header === "string" && !this.#closed && header.startsWith("Bearer ")) {
      const hit = this.#cache.get(header.slice(7), this.#now());
      if (hit !== undefined) return Promise.resolve(hit);
    }
    return this.#verifyOtherAuthorization(header);
  }

  /** Every header but a cached bearer token: its checks, and the verification of a new token. */
  async #verifyOtherAuthorization(header: string | undefined | null): Promise<Principal> {
    if (typeof header !== "string" || header.trim() === "") {
      throw new OnbehalfError(
        "ERR_TOKEN_MISSING",
        "no Authorization header: send Authorization: Bearer <token>",
      );
    }
    const value = header.trim();
    const space = value.search(/\s/);
    const scheme = space === -1 ? value : value.slice(0, space);
    if (scheme.toLowerCase() !== "bearer") {
      throw new OnbehalfError(
        "ERR_TOKEN_MISSING",
        `the Authorization header uses the "${scheme.slice(0, 20)}" scheme, not Bearer: send Authorization: Bearer <token>`,
      );
    }
    const token = space === -1 ? "" : value.slice(space + 1).trim();
    if (token === "")
      throw new OnbehalfError("ERR_TOKEN_MISSING", "the Authorization header has no bearer token");
    if (/\s/.test(token)) {
      throw new OnbehalfError("ERR_TOKEN_MALFORMED", "the bearer token contains whitespace");
    }
    return this.verify(token);
  }

  jwksFetches(issuer: string): number {
    return this.#contexts.get(issuer)?.keys.fetches ?? 0;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#abort.abort(new OnbehalfError("ERR_CLOSED", "the identity verifier was closed"));
    this.#cache.clear();
  }

  /** Synchronous unless the issuer's keys must be fetched first. */
  #verifyUncached(token: string): Principal | Promise<Principal> {
    const parts = splitCompact(token, this.#maxBytes, false);
    const ctx = this.#single ?? this.#issuerOf(token, parts.dot1, parts.dot2);
    assertTokenSize(token, ctx.maxTokenBytes);
    const { alg, kid } = this.#header(ctx, token.slice(0, parts.dot1));
    if (alg.startsWith("HS")) {
      if (ctx.hmac === null)
        throw new OnbehalfError("ERR_TOKEN_ALG_NOT_ALLOWED", `alg "${alg}" is not allowed`);
      return this.#finish(token, ctx, ctx.hmac, Number.POSITIVE_INFINITY);
    }
    const selection = ctx.keys.lookup(kid, alg);
    if (selection !== undefined && "entry" in selection) {
      return this.#finish(token, ctx, selection.entry.verify, ctx.keys.freshUntil);
    }
    return ctx.keys.resolve(kid, alg).then((entry) => {
      if (this.#closed) throw closedError();
      return this.#finish(token, ctx, entry.verify, ctx.keys.freshUntil);
    });
  }

  /** Decode and check the header, or reuse the outcome for a header segment seen before. */
  #header(ctx: IssuerContext, segment: string): CheckedHeader {
    const known = ctx.checkedHeaders.get(segment);
    if (known !== undefined) return known;
    const checked = checkHeader(decodeJsonObject(segment, 0, segment.length, "header"), ctx.header);
    if (ctx.checkedHeaders.size >= CHECKED_HEADERS_MAX) ctx.checkedHeaders.clear();
    ctx.checkedHeaders.set(segment, checked);
    return checked;
  }

  /**
   * Signature, claims, principal. The principal is cached until the token's `exp`, or until the issuer's
   * keys go stale if that is sooner: then the token is verified again against the refetched keys, so a key
   * the issuer removed stops working within `jwks_cache_seconds` even for cached tokens (and at once when a
   * refetch for another reason sees the removal, see `onKeysRemoved`).
   */
  #finish(
    token: string,
    ctx: IssuerContext,
    verifySignature: JwtSignatureVerifier,
    keysFreshUntil: number,
  ): Principal {
    const claims = verifySignature(token);
    const now = this.#now();
    checkClaims(claims, ctx.rules, now);
    const principal = toPrincipal(claims, ctx.rules);
    this.#cache.set(token, principal, Math.min(principal.exp * 1000, keysFreshUntil), now);
    return principal;
  }

  #issuerOf(token: string, dot1: number, dot2: number): IssuerContext {
    const iss = decodeJsonObject(token, dot1 + 1, dot2, "payload")["iss"];
    const ctx = typeof iss === "string" ? this.#contexts.get(iss) : undefined;
    if (ctx === undefined) {
      throw new OnbehalfError(
        "ERR_TOKEN_ISSUER_UNKNOWN",
        `the token iss ${JSON.stringify(iss)} is not a trusted issuer (trusted: ${this.issuers.join(", ") || "none"})`,
      );
    }
    return ctx;
  }
}

function asOnbehalfError(e: unknown): OnbehalfError {
  if (e instanceof OnbehalfError) return e;
  return new OnbehalfError("ERR_TOKEN_MALFORMED", "the token could not be processed", { cause: e });
}

function closedError(): OnbehalfError {
  return new OnbehalfError("ERR_CLOSED", "the identity verifier was closed");
}
