/**
 * On-behalf-of tokens for upstream servers. The gateway never forwards the user's own token (the MCP
 * authorization spec forbids passing it through); instead it mints a short-lived JWT for one upstream:
 * `aud` = that upstream, `sub` = the human, the tenant, `scope` = the effective scopes, nested `act` = the agent
 * chain, signed by the control plane's key (verifiable at /.well-known/jwks.json), lifetime ≤ 5 minutes.
 * Tokens are cached per human, chain, scopes and upstream for half their lifetime.
 */
import { randomUUID } from "node:crypto";
import { actClaim } from "../context/delegation.js";
import type { RunContext } from "../context/run.js";
import { type SigningKey, signJwt } from "../identity/keys.js";

export const OBO_TTL_SECONDS = 300;

export interface OboMinter {
  /** A token for `audience` acting for the run's human through its chain (cached briefly). */
  forRun(run: RunContext, audience: string): string;
  /** A token naming the gateway itself, for requests no human is behind (listing an upstream's tools). */
  forGateway(audience: string): string;
}

/**
 * Create the minter for a control plane's key.
 *
 * @example
 * const obo = createOboMinter(key, "https://onbehalf.example.com");
 * headers.authorization = `Bearer ${obo.forRun(run, "https://crm.example")}`;
 */
export function createOboMinter(key: SigningKey, issuer: string, now: () => number = Date.now): OboMinter {
  const cache = new Map<string, { token: string; refreshAt: number }>();
  const mint = (cacheKey: string, claims: Record<string, unknown>, ttl: number): string => {
    const ms = now();
    const hit = cache.get(cacheKey);
    if (hit !== undefined && hit.refreshAt > ms) return hit.token;
    const iat = Math.floor(ms / 1000);
    const exp = Math.min(iat + OBO_TTL_SECONDS, iat + Math.max(1, ttl));
    const token = signJwt(key, { iss: issuer, iat, exp, jti: randomUUID(), ...claims }, { typ: "JWT" });
    if (cache.size > 10_000) cache.clear();
    cache.set(cacheKey, { token, refreshAt: ms + ((exp - iat) * 1000) / 2 });
    return token;
  };
  return {
    forRun(run, audience) {
      const p = run.principal;
      const scopes = [...run.scopes].sort();
      const key = JSON.stringify([p.issuer, p.user, p.tenant, run.chain, scopes, audience]);
      // never beyond the human's own token
      const ttl = p.exp > 0 ? p.exp - Math.floor(now() / 1000) : OBO_TTL_SECONDS;
      return mint(
        key,
        {
          aud: audience,
          sub: p.user,
          tenant: p.tenant,
          scope: scopes.join(" "),
          act: actClaim(run.chain),
          ...(p.email === null ? {} : { email: p.email }),
        },
        ttl,
      );
    },
    forGateway(audience) {
      return mint(
        JSON.stringify(["gateway", audience]),
        { aud: audience, sub: issuer, client_id: issuer },
        OBO_TTL_SECONDS,
      );
    },
  };
}
