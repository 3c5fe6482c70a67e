/**
 * Real identity-provider parts for tests:
 * - `startOidcProvider`: a real `oidc-provider` (v9) on 127.0.0.1 with a random port, a `client_credentials`
 *   client and resource indicators, so `/token` issues JWT access tokens (`typ: at+jwt`) for a `resource`;
 *   `rotate(keys)` restarts it (a new Provider instance with a new keystore) behind the same port;
 * - `startJwksServer`: a plain node:http server that serves a JWK Set and counts requests;
 * - `startCountingServer`: a server that only counts what it is asked (the attacker's `jku`/`x5u` host);
 * - `generateTestKey`, `signToken`: keys and hand-made compact JWS tokens, for attacks the IdP never makes.
 */
import {
  createHmac,
  createPublicKey,
  constants as cryptoConstants,
  sign as cryptoSign,
  generateKeyPairSync,
  type JsonWebKey,
  type KeyObject,
} from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/** Algorithms test keys can be made for. */
export type TestAlgorithm = "RS256" | "PS256" | "ES256" | "ES384" | "ES512" | "EdDSA";

/** A test key pair with its JWKs. */
export interface TestKey {
  readonly kid: string;
  readonly alg: TestAlgorithm;
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  /** Private JWK with kid, alg and use (what oidc-provider's `jwks` takes). */
  readonly privateJwk: JsonWebKey & { kid: string; alg: string; use: "sig" };
  /** Public JWK with kid, alg and use (what a JWKS publishes). */
  readonly publicJwk: JsonWebKey & { kid: string; alg: string; use: "sig" };
}

let keyCounter = 0;

/**
 * Generate a key pair for `alg`.
 *
 * @example
 * const key = generateTestKey("ES256", "ec-1");
 */
export function generateTestKey(alg: TestAlgorithm, kid = `${alg.toLowerCase()}-${++keyCounter}`): TestKey {
  const pair =
    alg === "RS256" || alg === "PS256"
      ? generateKeyPairSync("rsa", { modulusLength: 2048 })
      : alg === "EdDSA"
        ? generateKeyPairSync("ed25519")
        : generateKeyPairSync("ec", { namedCurve: { ES256: "P-256", ES384: "P-384", ES512: "P-521" }[alg] });
  const meta = { kid, alg, use: "sig" as const };
  return {
    kid,
    alg,
    privateKey: pair.privateKey,
    publicKey: pair.publicKey,
    privateJwk: { ...pair.privateKey.export({ format: "jwk" }), ...meta },
    publicJwk: { ...pair.publicKey.export({ format: "jwk" }), ...meta },
  };
}

/** base64url of a JSON value. */
export function b64json(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString("base64url");
}

/**
 * Make a compact JWS from any header and payload, signed with `key` using `header.alg` (RS*, PS*, ES*,
 * EdDSA with a private key, e.g. a {@link TestKey}; HS* with a secret). `signature` overrides the signature segment.
 *
 * @example
 * const token = signToken({ alg: "ES256", kid: key.kid }, { sub: "alice" }, key);
 * const forged = signToken({ alg: "HS256" }, claims, { secret: publicPem });
 */
export function signToken(
  header: Record<string, unknown>,
  payload: Record<string, unknown> | string,
  key: { readonly privateKey: KeyObject } | { readonly secret: string | Uint8Array } | null,
  options: { readonly signature?: string } = {},
): string {
  const input = `${b64json(header)}.${typeof payload === "string" ? Buffer.from(payload).toString("base64url") : b64json(payload)}`;
  if (options.signature !== undefined) return `${input}.${options.signature}`;
  if (key === null) return `${input}.`;
  const alg = String(header["alg"]);
  const data = Buffer.from(input);
  let signature: Buffer;
  if ("secret" in key) {
    signature = createHmac(`sha${alg.slice(2)}`, key.secret)
      .update(data)
      .digest();
  } else if (alg === "EdDSA") {
    signature = cryptoSign(null, data, key.privateKey);
  } else if (alg.startsWith("ES")) {
    signature = cryptoSign(`sha${alg.slice(2)}`, data, { key: key.privateKey, dsaEncoding: "ieee-p1363" });
  } else if (alg.startsWith("PS")) {
    signature = cryptoSign(`sha${alg.slice(2)}`, data, {
      key: key.privateKey,
      padding: cryptoConstants.RSA_PKCS1_PSS_PADDING,
      saltLength: cryptoConstants.RSA_PSS_SALTLEN_DIGEST,
    });
  } else {
    signature = cryptoSign(`sha${alg.slice(2)}`, data, key.privateKey);
  }
  return `${input}.${signature.toString("base64url")}`;
}

/** The SPKI PEM of a test key's public half. */
export function publicPem(key: TestKey): string {
  return createPublicKey(key.privateKey).export({ type: "spki", format: "pem" }).toString();
}

async function listen(
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<{ server: Server; port: number }> {
  const server = createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  return { server, port: (server.address() as AddressInfo).port };
}

async function shut(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

/** A local JWKS endpoint. */
export interface JwksServer {
  /** The JWKS URL (http://127.0.0.1:port/jwks). */
  readonly url: string;
  /** Requests received so far. */
  readonly requests: number;
  /** Replace the served keys (public JWKs). */
  setKeys(keys: readonly JsonWebKey[]): void;
  /** Answer with this HTTP status instead of the keys (null = serve keys again). */
  failWith(status: number | null): void;
  close(): Promise<void>;
}

/**
 * Serve a JWK Set over node:http on 127.0.0.1.
 *
 * @example
 * const jwks = await startJwksServer([key.publicJwk]);
 * IssuerConfig.parse({ issuer, audience, jwks_uri: jwks.url });
 */
export async function startJwksServer(keys: readonly JsonWebKey[]): Promise<JwksServer> {
  let served = keys;
  let status: number | null = null;
  let requests = 0;
  const { server, port } = await listen((_req, res) => {
    requests++;
    if (status !== null) {
      res.writeHead(status).end();
      return;
    }
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ keys: served }));
  });
  return {
    url: `http://127.0.0.1:${port}/jwks`,
    get requests() {
      return requests;
    },
    setKeys(next) {
      served = next;
    },
    failWith(next) {
      status = next;
    },
    close: () => shut(server),
  };
}

/** A server that answers everything with a JWKS-looking body and counts the requests. */
export interface CountingServer {
  readonly url: string;
  readonly requests: number;
  close(): Promise<void>;
}

/**
 * Start the attacker's server: whatever is asked, it answers with `body` (default: the attacker's JWKS).
 *
 * @example
 * const evil = await startCountingServer({ keys: [attacker.publicJwk] });
 */
export async function startCountingServer(body: unknown = { keys: [] }): Promise<CountingServer> {
  let requests = 0;
  const { server, port } = await listen((_req, res) => {
    requests++;
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(body));
  });
  return {
    url: `http://127.0.0.1:${port}/`,
    get requests() {
      return requests;
    },
    close: () => shut(server),
  };
}

/** Options of {@link OidcProviderHandle.getToken}. */
export interface GetTokenOptions {
  /** The resource indicator (RFC 8707); becomes the token's `aud`. Default: `DEFAULT_RESOURCE`. */
  readonly resource?: string;
  /** Requested scopes (space-separated); must be among the provider's scopes. */
  readonly scope?: string;
  /** Signing algorithm; the provider signs with its first key of that type. Default RS256. */
  readonly alg?: TestAlgorithm;
  /** Sign with this key id. */
  readonly kid?: string;
  /** Claims added to (or replacing) the access token's own, e.g. `{ sub: "alice", tenant: "acme" }`. */
  readonly claims?: Record<string, unknown>;
}

/** A running oidc-provider. */
export interface OidcProviderHandle {
  /** `http://127.0.0.1:<port>` */
  readonly issuer: string;
  /** The keys the provider signs with now. */
  readonly keys: readonly TestKey[];
  /** Requests per path seen (e.g. `/jwks`, `/token`, `/.well-known/openid-configuration`). */
  requests(path: string): number;
  /** Obtain a JWT access token over HTTP (client_credentials + resource). */
  getToken(options?: GetTokenOptions): Promise<string>;
  /** Restart the provider with these keys (the first of each type signs), on the same port. */
  rotate(keys: readonly TestKey[]): Promise<void>;
  close(): Promise<void>;
}

/** Options of {@link startOidcProvider}. */
export interface OidcProviderOptions {
  /** Signing keys; default: one RS256 and one ES256 key. */
  readonly keys?: readonly TestKey[];
  /** Scopes resource servers accept; default customers:read orders:write email.read. */
  readonly scopes?: readonly string[];
  readonly clientId?: string;
  readonly clientSecret?: string;
  /** Access token lifetime in seconds; default 300. */
  readonly ttlSeconds?: number;
}

export const DEFAULT_RESOURCE = "https://api.onbehalf.test";
const SIGN_HEADER = "x-test-sign";
const CLAIMS_HEADER = "x-test-claims";

// oidc-provider ships no type declarations: the minimal surface used here.
interface KoaContext {
  get(field: string): string;
}
interface ProviderInstance {
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
}
type ProviderClass = new (issuer: string, configuration: Record<string, unknown>) => ProviderInstance;

/** A plain in-memory storage adapter (the provider's own default prints a warning for every instance). */
class MemoryAdapter {
  static readonly store = new Map<string, Record<string, unknown>>();
  constructor(private readonly model: string) {}
  #key(id: string): string {
    return `${this.model}:${id}`;
  }
  async upsert(id: string, payload: Record<string, unknown>): Promise<void> {
    MemoryAdapter.store.set(this.#key(id), payload);
  }
  async find(id: string): Promise<Record<string, unknown> | undefined> {
    return MemoryAdapter.store.get(this.#key(id));
  }
  async findByUid(): Promise<undefined> {
    return undefined;
  }
  async findByUserCode(): Promise<undefined> {
    return undefined;
  }
  async consume(id: string): Promise<void> {
    const entry = MemoryAdapter.store.get(this.#key(id));
    if (entry) entry["consumed"] = Math.floor(Date.now() / 1000);
  }
  async destroy(id: string): Promise<void> {
    MemoryAdapter.store.delete(this.#key(id));
  }
  async revokeByGrantId(): Promise<void> {}
}

let providerClass: Promise<ProviderClass> | undefined;
function loadProvider(): Promise<ProviderClass> {
  const specifier: string = "oidc-provider";
  providerClass ??= (import(specifier) as Promise<{ default: ProviderClass }>).then((m) => m.default);
  return providerClass;
}

/**
 * Start a real oidc-provider on 127.0.0.1 (random port).
 *
 * @example
 * const idp = await startOidcProvider();
 * const token = await idp.getToken({ alg: "ES256", claims: { sub: "alice" } });
 * await idp.close();
 */
export async function startOidcProvider(options: OidcProviderOptions = {}): Promise<OidcProviderHandle> {
  const Provider = await loadProvider();
  const clientId = options.clientId ?? "agent-app";
  const clientSecret = options.clientSecret ?? "a-long-enough-client-secret-for-tests";
  const scopes = options.scopes ?? ["customers:read", "orders:write", "email.read"];
  const ttl = options.ttlSeconds ?? 300;
  const counts = new Map<string, number>();
  let keys: readonly TestKey[] = options.keys ?? [generateTestKey("RS256"), generateTestKey("ES256")];
  let current: ProviderInstance | undefined;

  const { server, port } = await listen((req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    counts.set(path, (counts.get(path) ?? 0) + 1);
    if (current === undefined) res.writeHead(503).end();
    else current.callback()(req, res);
  });
  const issuer = `http://127.0.0.1:${port}`;

  const build = (signingKeys: readonly TestKey[]): ProviderInstance =>
    new Provider(issuer, {
      adapter: MemoryAdapter,
      jwks: { keys: signingKeys.map((k) => k.privateJwk) },
      clients: [
        {
          client_id: clientId,
          client_secret: clientSecret,
          grant_types: ["client_credentials"],
          redirect_uris: [],
          response_types: [],
        },
      ],
      scopes: ["openid", ...scopes],
      ttl: { ClientCredentials: ttl },
      features: {
        clientCredentials: { enabled: true },
        devInteractions: { enabled: false },
        resourceIndicators: {
          enabled: true,
          defaultResource: async () => DEFAULT_RESOURCE,
          useGrantedResource: async () => true,
          getResourceServerInfo: async (ctx: KoaContext, resource: string) => {
            const sign = JSON.parse(ctx.get(SIGN_HEADER) || "{}") as { alg?: string; kid?: string };
            return {
              scope: scopes.join(" "),
              audience: resource,
              accessTokenTTL: ttl,
              accessTokenFormat: "jwt",
              jwt: { sign: { alg: sign.alg ?? "RS256", ...(sign.kid ? { kid: sign.kid } : {}) } },
            };
          },
        },
      },
      formats: {
        customizers: {
          jwt: async (ctx: KoaContext, _token: unknown, jwt: { payload: Record<string, unknown> }) => {
            const extra = ctx.get(CLAIMS_HEADER);
            if (extra)
              Object.assign(jwt.payload, JSON.parse(Buffer.from(extra, "base64url").toString("utf8")));
          },
        },
      },
    });

  current = build(keys);
  return {
    issuer,
    get keys() {
      return keys;
    },
    requests: (path) => counts.get(path) ?? 0,
    async getToken(opts = {}) {
      const body = new URLSearchParams({
        grant_type: "client_credentials",
        resource: opts.resource ?? DEFAULT_RESOURCE,
      });
      if (opts.scope !== undefined) body.set("scope", opts.scope);
      const response = await fetch(`${issuer}/token`, {
        method: "POST",
        headers: {
          "content-type": "application/x-www-form-urlencoded",
          authorization: `Basic ${Buffer.from(`${clientId}:${clientSecret}`).toString("base64")}`,
          [SIGN_HEADER]: JSON.stringify({ alg: opts.alg ?? "RS256", ...(opts.kid ? { kid: opts.kid } : {}) }),
          ...(opts.claims
            ? { [CLAIMS_HEADER]: Buffer.from(JSON.stringify(opts.claims)).toString("base64url") }
            : {}),
        },
        body,
      });
      const json = (await response.json()) as {
        access_token?: string;
        error?: string;
        error_description?: string;
      };
      if (!response.ok || typeof json.access_token !== "string") {
        throw new Error(
          `token request failed: ${response.status} ${json.error ?? ""} ${json.error_description ?? ""}`,
        );
      }
      return json.access_token;
    },
    async rotate(next) {
      keys = next;
      current = build(next);
    },
    close: () => shut(server),
  };
}
