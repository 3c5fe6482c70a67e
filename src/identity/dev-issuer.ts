/**
 * The development issuer: tokens onbehalf mints itself (`onbehalf dev-token`, the demo), so an app can be
 * tried without an identity provider. Trusted only when the config says `dev_issuer: true`; never in
 * production, since whoever holds the key file can be anybody.
 */
import { randomUUID } from "node:crypto";
import { IssuerConfig } from "../config/issuer.js";
import { type PublicJwk, type SigningKey, signJwt } from "./keys.js";

/** The `iss` of development tokens. */
export const DEV_ISSUER = "urn:onbehalf:dev-issuer";
/** The default `aud` of development tokens. */
export const DEV_AUDIENCE = "urn:onbehalf:dev";

/**
 * The issuer config that trusts development tokens signed by `publicJwk`: inline key, that key's algorithm
 * only, the generic preset (scopes from `scope`, roles from `roles`), tenant from the `tenant` claim. Its
 * audience is {@link DEV_AUDIENCE} and any of `audiences` (the MCP gateway's resource, for
 * `dev-token --audience <public_url>/mcp`).
 *
 * @example
 * const key = loadOrCreateSigningKey("./keys/dev-issuer.jwk");
 * const identity = createIdentity({ issuers: [devIssuerConfig(key.publicJwk, ["http://127.0.0.1:8787/mcp"])] });
 */
export function devIssuerConfig(publicJwk: PublicJwk, audiences: readonly string[] = []): IssuerConfig {
  return IssuerConfig.parse({
    issuer: DEV_ISSUER,
    audience: audiences.length === 0 ? DEV_AUDIENCE : [...new Set([DEV_AUDIENCE, ...audiences])],
    preset: "generic",
    jwks: { keys: [{ ...publicJwk }] },
    algorithms: [publicJwk.alg],
    claims: { tenant: "tenant" },
    // Development users keep their plain ids, however many real issuers are configured.
    user_prefix: "",
  });
}

/** Options of {@link mintDevToken}. */
export interface DevTokenOptions {
  readonly sub: string;
  readonly tenant: string;
  readonly scopes: readonly string[];
  readonly email?: string;
  readonly roles?: readonly string[];
  /** Lifetime; default 3600. */
  readonly ttlSeconds?: number;
  /** `aud`; default {@link DEV_AUDIENCE}. */
  readonly audience?: string;
}

/**
 * Mint a development token: `iss` = {@link DEV_ISSUER}, scopes space-separated in `scope`.
 *
 * @example
 * const token = mintDevToken(key, { sub: "alice", tenant: "acme", scopes: ["customers:read"] });
 */
export function mintDevToken(key: SigningKey, options: DevTokenOptions): string {
  const now = Math.floor(Date.now() / 1000);
  const payload: Record<string, unknown> = {
    iss: DEV_ISSUER,
    sub: options.sub,
    aud: options.audience ?? DEV_AUDIENCE,
    tenant: options.tenant,
    scope: options.scopes.join(" "),
    iat: now,
    exp: now + (options.ttlSeconds ?? 3600),
    jti: randomUUID(),
  };
  if (options.email !== undefined) payload["email"] = options.email;
  if (options.roles !== undefined && options.roles.length > 0) payload["roles"] = [...options.roles];
  return signJwt(key, payload);
}
