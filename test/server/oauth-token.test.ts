/**
 * `/v1/token` as standard OAuth: panva's `oauth4webapi` (what most JavaScript OAuth libraries build on) finds the
 * endpoint by RFC 8414 discovery and exchanges tokens with a public client, `client_secret_basic`,
 * `client_secret_post` and `private_key_jwt` (RFC 7523), with no onbehalf-specific code; every refusal is read
 * by the library as the OAuth error it is. Registered agent runtimes are held to the agents and tiers they are
 * registered for, and a tenant that requires it takes delegations from them only. Tokens from a real
 * oidc-provider. The server is reached at its `public_url` through `customFetch` (the test listens on a free port).
 */
import { createHash, randomBytes, webcrypto } from "node:crypto";
import { SignJWT } from "jose";
import * as oauth from "oauth4webapi";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { OnbehalfServer } from "../../src/server/app.js";
import { ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE } from "../../src/server/token-exchange.js";
import { type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { ACME_POLICY, ADMIN, call, serverConfig, startTestServer, userToken } from "../support/server.js";

const ISSUER = "https://onbehalf.test";
const SECRET = randomBytes(32).toString("base64url");
const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

let idp: OidcProviderHandle;
let server: OnbehalfServer;
let as: oauth.AuthorizationServer;
let alice: string;
let jwtKey: webcrypto.CryptoKeyPair;

/** Requests to the public URL go to where the test server listens. */
const reach = {
  [oauth.customFetch]: (url: string, init: oauth.CustomFetchOptions<string, unknown>) =>
    fetch(url.replace(ISSUER, server.url), init as RequestInit),
};

beforeAll(async () => {
  idp = await startOidcProvider();
  jwtKey = (await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
    "sign",
    "verify",
  ])) as webcrypto.CryptoKeyPair;
  const publicJwk = {
    ...(await webcrypto.subtle.exportKey("jwk", jwtKey.publicKey)),
    kty: "EC" as const,
    kid: "runtime-1",
  };
  const base = serverConfig(idp);
  server = await startTestServer(idp, {
    server: { ...base.server, public_url: ISSUER },
    tenants: [
      {
        id: "acme",
        policy: ACME_POLICY,
        clients: [
          {
            client_id: "support-runtime",
            auth: "client_secret_basic",
            secret_sha256: sha256(SECRET),
            agents: ["planner", "researcher"],
            tiers: ["subagent", "interactive"],
          },
          {
            client_id: "post-runtime",
            auth: "client_secret_post",
            secret_sha256: sha256(SECRET),
            agents: ["writer"],
          },
          {
            client_id: "jwt-runtime",
            auth: "private_key_jwt",
            jwks: { keys: [publicJwk] },
            agents: ["researcher"],
          },
        ],
      },
      {
        id: "strictco",
        policy: ACME_POLICY,
        require_client_auth: true,
        clients: [
          {
            client_id: "strict-runtime",
            auth: "client_secret_basic",
            secret_sha256: sha256(SECRET),
            agents: ["planner", "researcher"],
          },
        ],
      },
    ],
  });
  as = await oauth.processDiscoveryResponse(
    new URL(ISSUER),
    await oauth.discoveryRequest(new URL(ISSUER), { algorithm: "oauth2", ...reach }),
  );
  alice = await userToken(idp, "alice", "customers:read orders:write");
});
afterAll(async () => {
  await server?.close();
  await idp?.close();
});

/** An RFC 8693 exchange as oauth4webapi makes it; resolves to the token response or rejects with its error. */
async function exchange(
  client: oauth.Client,
  auth: oauth.ClientAuth,
  params: Record<string, string>,
  grantType = TOKEN_EXCHANGE,
) {
  const response = await oauth.genericTokenEndpointRequest(as, client, auth, grantType, params, reach);
  return oauth.processGenericTokenEndpointResponse(as, client, response);
}
const subject = (token: string) => ({ subject_token: token, subject_token_type: ACCESS_TOKEN_TYPE });
const claims = (jwt: string) => JSON.parse(Buffer.from(jwt.split(".")[1]!, "base64url").toString());
/** What an exchange was refused with, as the library reports it. */
async function refusal(promise: Promise<unknown>) {
  const e = await promise.then(
    () => expect.unreachable("the exchange was expected to be refused"),
    (error: unknown) => error,
  );
  if (e instanceof oauth.ResponseBodyError)
    return { status: e.status, error: e.error, description: e.error_description };
  if (e instanceof oauth.WWWAuthenticateChallengeError) {
    const body = (await e.response.json()) as { error: string; error_description: string };
    return {
      status: e.status,
      challenge: e.cause[0]?.scheme,
      error: body.error,
      description: body.error_description,
    };
  }
  throw e;
}

describe("/v1/token for OAuth clients", () => {
  it("publishes RFC 8414 metadata that the library's discovery takes", () => {
    expect(as).toMatchObject({
      issuer: ISSUER,
      token_endpoint: `${ISSUER}/v1/token`,
      jwks_uri: `${ISSUER}/.well-known/jwks.json`,
      grant_types_supported: [TOKEN_EXCHANGE],
      token_endpoint_auth_methods_supported: [
        "none",
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
      ],
    });
  });

  it("exchanges for a public client (client_id in the body, RFC 6749 §2.3), unauthenticated", async () => {
    const token = await exchange({ client_id: "some-agent-app" }, oauth.None(), {
      ...subject(alice),
      actor: "planner",
    });
    expect(token.token_type).toBe("bearer");
    expect(claims(token.access_token)).toMatchObject({ iss: ISSUER, sub: "alice", act: { sub: "planner" } });
    expect(claims(token.access_token).act.client_id).toBeUndefined();
    await server.governor.flush();
    const [record] = (
      await call(server.url, "GET", "/v1/audit?user=alice&limit=50", { token: ADMIN })
    ).body.records.filter(
      (r: { kind: string; agent: string }) => r.kind === "delegation" && r.agent === "planner",
    );
    expect(record.args).toMatchObject({
      client_id: "some-agent-app",
      client_authenticated: false,
      clients: [null],
    });
  });

  it("exchanges with client_secret_basic, signing the client into each hop it vouches for", async () => {
    const token = await exchange({ client_id: "support-runtime" }, oauth.ClientSecretBasic(SECRET), {
      ...subject(alice),
      subject_actor: "planner",
      actor: "researcher",
    });
    expect(claims(token.access_token).act).toEqual({
      sub: "researcher",
      client_id: "support-runtime",
      act: { sub: "planner", client_id: "support-runtime" },
    });
    // the delegation token works where delegation tokens do: the chain is the signed one
    const check = await call(server.url, "POST", "/v1/check", {
      token: token.access_token,
      body: { tool: "get_customer", agent: { name: "researcher" }, args: { id: "c-1" } },
    });
    expect(check.body).toMatchObject({ decision: "allow", chain: ["planner", "researcher"] });
    // the call's audit records say which client vouched for each hop of the chain
    await server.governor.flush();
    const records = (
      await call(server.url, "GET", "/v1/audit?user=alice&limit=500", { token: ADMIN })
    ).body.records.filter((r: { call_id: string }) => r.call_id === check.body.call_id) as Record<
      string,
      unknown
    >[];
    expect(records.length).toBeGreaterThan(0);
    for (const r of records) expect(r["chain_clients"]).toEqual(["support-runtime", "support-runtime"]);
    // a run nobody vouched for carries no such field: its records hash as they always did
    const plain = await exchange({ client_id: "some-agent-app" }, oauth.None(), {
      ...subject(alice),
      actor: "planner",
    });
    const unvouched = await call(server.url, "POST", "/v1/check", {
      token: plain.access_token,
      body: { tool: "get_customer", agent: { name: "planner" }, args: { id: "c-1" } },
    });
    await server.governor.flush();
    const [record] = (
      await call(server.url, "GET", "/v1/audit?user=alice&limit=500", { token: ADMIN })
    ).body.records.filter((r: { call_id: string }) => r.call_id === unvouched.body.call_id) as Record<
      string,
      unknown
    >[];
    expect(record).toBeDefined();
    expect("chain_clients" in record!).toBe(false);
  });

  it("exchanges with client_secret_post and with private_key_jwt (RFC 7523)", async () => {
    const posted = await exchange({ client_id: "post-runtime" }, oauth.ClientSecretPost(SECRET), {
      ...subject(alice),
      actor: "writer",
    });
    expect(claims(posted.access_token).act).toEqual({ sub: "writer", client_id: "post-runtime" });
    const signed = await exchange(
      { client_id: "jwt-runtime" },
      oauth.PrivateKeyJwt({ key: jwtKey.privateKey, kid: "runtime-1" }),
      { ...subject(alice), actor: "researcher" },
    );
    expect(claims(signed.access_token).act).toEqual({ sub: "researcher", client_id: "jwt-runtime" });
  });

  it("refuses a client_assertion used twice, signed by another key, or for another audience", async () => {
    const assertion = (key: webcrypto.CryptoKey, aud = ISSUER) =>
      new SignJWT({ jti: randomBytes(8).toString("hex") })
        .setProtectedHeader({ alg: "ES256", kid: "runtime-1" })
        .setIssuer("jwt-runtime")
        .setSubject("jwt-runtime")
        .setAudience(aud)
        .setIssuedAt()
        .setExpirationTime("1m")
        .sign(key);
    const post = (clientAssertion: string) =>
      call(server.url, "POST", "/v1/token", {
        raw: new URLSearchParams({
          grant_type: TOKEN_EXCHANGE,
          ...subject(alice),
          actor: "researcher",
          client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
          client_assertion: clientAssertion,
        }).toString(),
        contentType: "application/x-www-form-urlencoded",
      });
    const once = await assertion(jwtKey.privateKey);
    expect((await post(once)).status).toBe(200);
    expect((await post(once)).body).toEqual({
      error: "invalid_client",
      error_description: "client jwt-runtime: this client_assertion was used before",
    });
    const other = (await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
      "sign",
      "verify",
    ])) as webcrypto.CryptoKeyPair;
    expect((await post(await assertion(other.privateKey))).body.error).toBe("invalid_client");
    expect((await post(await assertion(jwtKey.privateKey, "https://elsewhere.test"))).body.error).toBe(
      "invalid_client",
    );
  });

  it("reads every refusal as the OAuth error it is", async () => {
    const pub = { client_id: "some-agent-app" };
    expect(
      await refusal(exchange(pub, oauth.None(), { ...subject(alice), actor: "a" }, "password")),
    ).toMatchObject({
      status: 400,
      error: "unsupported_grant_type",
    });
    expect(await refusal(exchange(pub, oauth.None(), { ...subject("garbage"), actor: "a" }))).toMatchObject({
      status: 400,
      error: "invalid_request",
      description: expect.stringMatching(/^the subject_token is not acceptable/),
    });
    expect(await refusal(exchange(pub, oauth.None(), { subject_token: alice, actor: "a" }))).toMatchObject({
      status: 400,
      error: "invalid_request",
      description: expect.stringMatching(/subject_token_type is required/),
    });
    expect(
      await refusal(exchange(pub, oauth.None(), { ...subject(alice), actor: "a", scope: "a\\b" })),
    ).toMatchObject({
      status: 400,
      error: "invalid_scope",
    });
    expect(
      await refusal(
        exchange(pub, oauth.None(), { ...subject(alice), actor: "a", resource: "https://crm.example" }),
      ),
    ).toMatchObject({ status: 400, error: "invalid_target" });
    // a wrong secret over HTTP Basic: 401 with a Basic challenge (RFC 6749 §5.2), the body invalid_client
    expect(
      await refusal(
        exchange({ client_id: "support-runtime" }, oauth.ClientSecretBasic("wrong"), {
          ...subject(alice),
          actor: "planner",
        }),
      ),
    ).toMatchObject({ status: 401, challenge: "basic", error: "invalid_client" });
    // in the body: 400 invalid_client
    expect(
      await refusal(
        exchange({ client_id: "post-runtime" }, oauth.ClientSecretPost("wrong"), {
          ...subject(alice),
          actor: "writer",
        }),
      ),
    ).toMatchObject({ status: 400, error: "invalid_client" });
    // a registered client that does not authenticate, or with another method than registered
    expect(
      await refusal(
        exchange({ client_id: "support-runtime" }, oauth.None(), { ...subject(alice), actor: "planner" }),
      ),
    ).toMatchObject({
      error: "invalid_client",
      description: "client support-runtime must authenticate with client_secret_basic",
    });
    expect(
      await refusal(
        exchange({ client_id: "support-runtime" }, oauth.ClientSecretPost(SECRET), {
          ...subject(alice),
          actor: "planner",
        }),
      ),
    ).toMatchObject({ error: "invalid_client" });
  });

  it("holds a registered client to the agents and tiers it is registered for", async () => {
    const runtime = { client_id: "support-runtime" };
    expect(
      await refusal(
        exchange(runtime, oauth.ClientSecretBasic(SECRET), { ...subject(alice), actor: "billing-agent" }),
      ),
    ).toMatchObject({
      status: 400,
      error: "invalid_request",
      description:
        "client support-runtime may not act as agent billing-agent (it may act as planner, researcher)",
    });
    expect(
      await refusal(
        exchange(runtime, oauth.ClientSecretBasic(SECRET), {
          ...subject(alice),
          subject_actor: "intruder",
          actor: "planner",
        }),
      ),
    ).toMatchObject({
      error: "invalid_request",
      description: expect.stringMatching(/may not act as agent intruder/),
    });
    expect(
      await refusal(
        exchange(runtime, oauth.ClientSecretBasic(SECRET), {
          ...subject(alice),
          actor: "planner",
          tier: "background",
        }),
      ),
    ).toMatchObject({
      error: "invalid_request",
      description: "client support-runtime may not take tier background",
    });
    // a client of another tenant cannot vouch here
    const sam = await userToken(idp, "sam", "customers:read", { tenant: "strictco" });
    expect(
      await refusal(
        exchange(runtime, oauth.ClientSecretBasic(SECRET), { ...subject(sam), actor: "planner" }),
      ),
    ).toMatchObject({
      error: "invalid_request",
      description: expect.stringMatching(/registered for tenant acme/),
    });
    await server.governor.flush();
    const refused = (
      await call(server.url, "GET", "/v1/audit?user=alice&decision=deny&limit=50", { token: ADMIN })
    ).body.records;
    expect(refused).toContainEqual(
      expect.objectContaining({
        kind: "delegation",
        agent: "billing-agent",
        reason_code: "permission_deny",
        args: { client_id: "support-runtime", client_authenticated: true },
      }),
    );
  });

  it("in a tenant that requires it, takes delegations from registered, authenticated clients only", async () => {
    const sam = await userToken(idp, "sam", "customers:read", { tenant: "strictco" });
    expect(
      await refusal(exchange({ client_id: "anyone" }, oauth.None(), { ...subject(sam), actor: "planner" })),
    ).toMatchObject({
      status: 400,
      error: "invalid_client",
      description: expect.stringMatching(/^tenant strictco requires agent runtimes to authenticate/),
    });
    const strict = { client_id: "strict-runtime" };
    const first = await exchange(strict, oauth.ClientSecretBasic(SECRET), {
      ...subject(sam),
      actor: "planner",
    });
    const second = await exchange(strict, oauth.ClientSecretBasic(SECRET), {
      ...subject(first.access_token),
      actor: "researcher",
    });
    expect(claims(second.access_token).act).toEqual({
      sub: "researcher",
      client_id: "strict-runtime",
      act: { sub: "planner", client_id: "strict-runtime" },
    });
    // a delegation minted before the tenant required clients has a hop nobody vouched for: it cannot be extended
    const strictco = server.governor.config.tenants.find((t) => t.id === "strictco")!;
    server.governor.replaceTenant({ ...strictco, require_client_auth: false });
    let unvouched: string;
    try {
      unvouched = (
        await exchange({ client_id: "anyone" }, oauth.None(), { ...subject(sam), actor: "planner" })
      ).access_token;
    } finally {
      server.governor.replaceTenant(strictco);
    }
    expect(
      await refusal(
        exchange(strict, oauth.ClientSecretBasic(SECRET), { ...subject(unvouched), actor: "researcher" }),
      ),
    ).toMatchObject({
      error: "invalid_request",
      description: expect.stringMatching(/has agents none vouched for/),
    });
    await server.governor.flush();
    const refusedSam = (
      await call(server.url, "GET", "/v1/audit?user=sam&decision=deny&limit=50", { token: ADMIN })
    ).body.records;
    expect(refusedSam).toContainEqual(
      expect.objectContaining({ kind: "delegation", agent: "planner", reason_code: "unauthenticated" }),
    );
  });

  it("answers every exchange with Cache-Control: no-store, and the rest of the API with its own errors", async () => {
    const ok = await call(server.url, "POST", "/v1/token", {
      body: { grant_type: TOKEN_EXCHANGE, ...subject(alice), actor: "planner" },
    });
    const bad = await call(server.url, "POST", "/v1/token", { body: { grant_type: "password" } });
    for (const r of [ok, bad]) {
      expect(r.headers.get("cache-control")).toBe("no-store");
      expect(r.headers.get("pragma")).toBe("no-cache");
    }
    expect(
      (await call(server.url, "POST", "/v1/check", { body: { tool: "get_customer", agent: { name: "x" } } }))
        .body.error.code,
    ).toBe("ERR_TOKEN_MISSING");
  });
});
