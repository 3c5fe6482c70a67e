/**
 * RFC 8414 authorization server metadata at `/.well-known/oauth-authorization-server`: where OAuth clients
 * find the token endpoint, the grant it supports (token exchange) and how clients authenticate there, and the
 * keys delegation tokens are signed with.
 */
import type { FastifyInstance } from "fastify";
import { CLIENT_AUTH_METHODS } from "../config/clients.js";
import { ALGORITHMS } from "../config/issuer.js";
import type { ServerContext } from "./context.js";
import { TOKEN_EXCHANGE } from "./token-exchange.js";

/** The algorithms a `private_key_jwt` assertion may be signed with: the asymmetric ones. */
export const ASSERTION_ALGORITHMS = ALGORITHMS.filter((a) => !a.startsWith("HS"));

/**
 * The metadata document; `publicUrl` is where the server is reached (`public_url`, else where it listens).
 *
 * @example
 * authorizationServerMetadata(ctx, "https://onbehalf.example").token_endpoint; // "https://onbehalf.example/v1/token"
 */
export function authorizationServerMetadata(ctx: ServerContext, publicUrl: string) {
  return {
    issuer: ctx.issuer,
    token_endpoint: `${publicUrl}/v1/token`,
    jwks_uri: `${publicUrl}/.well-known/jwks.json`,
    grant_types_supported: [TOKEN_EXCHANGE],
    token_endpoint_auth_methods_supported: ["none", ...CLIENT_AUTH_METHODS],
    token_endpoint_auth_signing_alg_values_supported: ASSERTION_ALGORITHMS,
    response_types_supported: [],
    scopes_supported: scopesOf(ctx),
  };
}

/** Mount the metadata route. */
export function oauthMetadataRoutes(app: FastifyInstance, ctx: ServerContext, publicUrl: () => string): void {
  app.get("/.well-known/oauth-authorization-server", async () =>
    authorizationServerMetadata(ctx, publicUrl()),
  );
}

function scopesOf(ctx: ServerContext): string[] {
  const scopes = new Set<string>();
  for (const t of ctx.gov.policy.tools.values()) for (const s of t.requiredScopes) scopes.add(s);
  return [...scopes].sort();
}
