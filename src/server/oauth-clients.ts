/**
 * Client authentication at `/v1/token` (RFC 6749 §2.3): who is asking for a delegation. A registered agent
 * runtime (config/clients.ts) proves it with its secret — HTTP Basic (`client_secret_basic`) or in the body
 * (`client_secret_post`) — or with an assertion signed by its key (RFC 7523 `private_key_jwt`). A request may
 * use one method only. A `client_id` alone is a public client: named, not authenticated.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { FastifyRequest } from "fastify";
import { decodeProtectedHeader, jwtVerify } from "jose";
import type { AgentClientConfig } from "../config/clients.js";
import type { Config } from "../config/schema.js";
import { importJwk, type VerificationKey } from "../identity/jwk.js";
import { oauthError } from "./oauth-errors.js";

export const JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/** The longest a client assertion may live (`exp` − `iat`, or `exp` − now): RFC 7523 wants them short. */
const MAX_ASSERTION_SECONDS = 600;
/** Clock skew allowed on an assertion's `exp`, `iat` and `nbf`. */
const SKEW_SECONDS = 30;

/** The client fields of a token request body. */
export interface ClientParams {
  readonly client_id?: string | undefined;
  readonly client_secret?: string | undefined;
  readonly client_assertion_type?: string | undefined;
  readonly client_assertion?: string | undefined;
}

/** Who asked: nobody named, a public client, or a registered client that proved who it is. */
export type ClientAuth =
  | { readonly kind: "anonymous" }
  | { readonly kind: "public"; readonly clientId: string }
  | {
      readonly kind: "authenticated";
      readonly clientId: string;
      readonly tenant: string;
      readonly client: AgentClientConfig;
    };

/**
 * Claims a value once until `ttlMs` passes (the state store's `claimOnce`: shared by every instance on Redis).
 * False when it was claimed before.
 */
export type ClaimOnce = (key: string, ttlMs: number) => Promise<boolean>;

/**
 * Authenticates token requests against the registered clients; claims each assertion id (`jti`) until the
 * assertion expires, in the state store, so an assertion is accepted once by all the instances that share it.
 *
 * @example
 * const clients = new ClientAuthenticator((key, ttlMs) => state.claimOnce(key, ttlMs));
 * const who = await clients.authenticate(req, body, config, ["https://onbehalf.example/v1/token", issuer]);
 */
export class ClientAuthenticator {
  private readonly keys = new WeakMap<AgentClientConfig, VerificationKey[]>();

  constructor(
    private readonly claim: ClaimOnce,
    private readonly now: () => number = Date.now,
  ) {}

  /** Whether the request tried HTTP Basic client authentication (its 401 then names that scheme). */
  static triedBasic(req: FastifyRequest): boolean {
    return /^basic\s/i.test(req.headers.authorization ?? "");
  }

  /**
   * Who is asking. Throws `invalid_client` (401) for a client that fails to authenticate, is unknown, or uses
   * another method than it is registered with; `invalid_request` for two methods at once.
   */
  async authenticate(
    req: FastifyRequest,
    body: ClientParams,
    config: Config,
    audiences: readonly string[],
  ): Promise<ClientAuth> {
    const basic = ClientAuthenticator.triedBasic(req)
      ? parseBasic(req.headers.authorization ?? "")
      : undefined;
    const methods = [
      basic === undefined ? null : "client_secret_basic",
      body.client_secret === undefined ? null : "client_secret_post",
      body.client_assertion === undefined && body.client_assertion_type === undefined
        ? null
        : "private_key_jwt",
    ].filter((m) => m !== null);
    if (methods.length > 1) {
      throw oauthError(
        "invalid_request",
        `use one client authentication method, not ${methods.join(" and ")}`,
      );
    }
    if (basic !== undefined && body.client_id !== undefined && body.client_id !== basic.id) {
      throw oauthError(
        "invalid_request",
        "client_id in the body is not the one the Authorization header names",
      );
    }
    const clientId = basic?.id ?? body.client_id ?? assertedClientId(body);
    if (clientId === undefined) return { kind: "anonymous" };
    const registered = findClient(config, clientId);
    const method = methods[0];
    if (registered === undefined) {
      if (method !== undefined) throw oauthError("invalid_client", `client ${clientId} is not registered`);
      return { kind: "public", clientId };
    }
    const { tenant, client } = registered;
    if (method !== client.auth) {
      throw oauthError(
        "invalid_client",
        `client ${clientId} must authenticate with ${client.auth}${method === undefined ? "" : `, not ${method}`}`,
      );
    }
    if (method === "private_key_jwt") {
      await this.checkAssertion(client, body, audiences);
    } else {
      const secret = basic?.secret ?? body.client_secret ?? "";
      if (!secretMatches(secret, client.secret_sha256 ?? "")) {
        throw oauthError("invalid_client", `client ${clientId}: the secret is wrong`);
      }
    }
    return { kind: "authenticated", clientId, tenant, client };
  }

  private async checkAssertion(
    client: AgentClientConfig,
    body: ClientParams,
    audiences: readonly string[],
  ): Promise<void> {
    const id = client.client_id;
    if (body.client_assertion_type !== JWT_BEARER_ASSERTION || body.client_assertion === undefined) {
      throw oauthError(
        "invalid_client",
        `client_assertion_type must be ${JWT_BEARER_ASSERTION}, with client_assertion`,
      );
    }
    const assertion = body.client_assertion;
    let kid: string | undefined;
    try {
      kid = decodeProtectedHeader(assertion).kid;
    } catch {
      throw oauthError("invalid_client", `client ${id}: client_assertion is not a JWS`);
    }
    const keys = this.keysOf(client).filter((k) => kid === undefined || k.kid === undefined || k.kid === kid);
    let claims: { jti?: unknown; exp?: unknown; iat?: unknown } | undefined;
    for (const key of keys) {
      try {
        claims = (
          await jwtVerify(assertion, key.keyObject, {
            algorithms: [...key.algorithms],
            issuer: id,
            subject: id,
            audience: [...audiences],
            requiredClaims: ["exp", "jti"],
            clockTolerance: SKEW_SECONDS,
            currentDate: new Date(this.now()),
          })
        ).payload;
        break;
      } catch {
        // the next key, if any
      }
    }
    if (claims === undefined) {
      throw oauthError(
        "invalid_client",
        `client ${id}: client_assertion does not verify (signed by a registered key, iss and sub ${id}, aud the token endpoint, not expired)`,
      );
    }
    const now = Math.floor(this.now() / 1000);
    const exp = Number(claims.exp);
    const from = typeof claims.iat === "number" ? Math.min(claims.iat, now) : now;
    if (exp - from > MAX_ASSERTION_SECONDS) {
      throw oauthError(
        "invalid_client",
        `client ${id}: client_assertion lives longer than ${MAX_ASSERTION_SECONDS} s`,
      );
    }
    // Claimed after it verified: only a registered client's own key can take up room here. A store that cannot
    // answer fails the request (503), never lets the assertion through unclaimed.
    const jti = `assertion:${id}\u0000${String(claims.jti)}`;
    if (!(await this.claim(jti, (exp + SKEW_SECONDS - now) * 1000)))
      throw oauthError("invalid_client", `client ${id}: this client_assertion was used before`);
  }

  private keysOf(client: AgentClientConfig): VerificationKey[] {
    let keys = this.keys.get(client);
    if (keys === undefined) {
      keys = (client.jwks?.keys ?? []).flatMap((jwk) => {
        const r = importJwk(jwk);
        return "key" in r ? [r.key] : [];
      });
      this.keys.set(client, keys);
    }
    return keys;
  }
}

/** The client an assertion names (its `sub`), read before it is verified, to find the key to verify it with. */
function assertedClientId(body: ClientParams): string | undefined {
  if (body.client_assertion === undefined) return undefined;
  const payload = body.client_assertion.split(".")[1];
  try {
    const claims = JSON.parse(Buffer.from(payload ?? "", "base64url").toString()) as { sub?: unknown };
    if (typeof claims.sub === "string") return claims.sub;
  } catch {
    // not a JWT: said below
  }
  throw oauthError("invalid_client", "client_assertion is not a JWT naming its client in sub");
}

/** The registered client with this id, and its tenant. */
function findClient(
  config: Config,
  clientId: string,
): { tenant: string; client: AgentClientConfig } | undefined {
  for (const tenant of config.tenants) {
    const client = tenant.clients.find((c) => c.client_id === clientId);
    if (client !== undefined) return { tenant: tenant.id, client };
  }
  return undefined;
}

/** RFC 6749 §2.3.1: `Basic base64(urlencode(id) ":" urlencode(secret))`. */
function parseBasic(header: string): { id: string; secret: string } {
  const decoded = Buffer.from(header.replace(/^basic\s+/i, "").trim(), "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon <= 0) throw oauthError("invalid_client", "the Basic credentials are not client_id:client_secret");
  try {
    const decode = (s: string) => decodeURIComponent(s.replace(/\+/g, " "));
    return { id: decode(decoded.slice(0, colon)), secret: decode(decoded.slice(colon + 1)) };
  } catch {
    throw oauthError("invalid_client", "the Basic credentials are not form-urlencoded");
  }
}

function secretMatches(secret: string, sha256Hex: string): boolean {
  const given = createHash("sha256").update(secret, "utf8").digest();
  const expected = Buffer.from(sha256Hex, "hex");
  return expected.length === given.length && timingSafeEqual(given, expected);
}
