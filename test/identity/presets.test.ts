/** Claim mapping: each preset against a realistic token of its identity provider. */
import { beforeAll, describe, expect, it } from "vitest";
import { IssuerConfig } from "../../src/config/issuer.js";
import type { ConfigInput } from "../../src/config/schema.js";
import { readClaim } from "../../src/identity/claims.js";
import type { Principal } from "../../src/identity/principal.js";
import { createIdentity } from "../../src/identity/verify.js";
import { generateTestKey, signToken, type TestKey } from "../support/oidc.js";

type IssuerInput = NonNullable<ConfigInput["issuers"]>[number];

let key: TestKey;
beforeAll(() => {
  key = generateTestKey("EdDSA", "preset-key");
});

const now = () => Math.floor(Date.now() / 1000);

function config(input: Omit<IssuerInput, "jwks" | "algorithms">): IssuerConfig {
  return IssuerConfig.parse({ ...input, jwks: { keys: [key.publicJwk] }, algorithms: ["EdDSA"] });
}

async function principalOf(issuers: IssuerConfig[], claims: Record<string, unknown>): Promise<Principal> {
  const identity = createIdentity({ issuers });
  try {
    return await identity.verify(signToken({ alg: "EdDSA", kid: key.kid, typ: "JWT" }, claims, key));
  } finally {
    identity.close();
  }
}

describe("auth0", () => {
  const issuer = "https://acme.eu.auth0.com/";
  it("maps sub, org_id, scope + permissions, and namespaced custom claims", async () => {
    const p = await principalOf(
      [
        config({
          issuer,
          audience: "https://agents.example.com",
          preset: "auth0",
          claims: { roles: "https://example.com/roles", email: "https://example.com/email" },
        }),
      ],
      {
        iss: issuer,
        sub: "auth0|64f1c2a9e8b7d6c5b4a39281",
        aud: ["https://agents.example.com", "https://acme.eu.auth0.com/userinfo"],
        iat: now(),
        exp: now() + 600,
        azp: "Xk2b9Qf0ExampleClientId",
        scope: "openid profile email customers:read",
        org_id: "org_W9bQy1c2d3e4f5g6",
        permissions: ["customers:read", "refunds:write"],
        "https://example.com/roles": ["support", "billing"],
        "https://example.com/email": "alice@acme.example",
      },
    );
    expect(p).toMatchObject({
      user: "auth0|64f1c2a9e8b7d6c5b4a39281",
      sub: "auth0|64f1c2a9e8b7d6c5b4a39281",
      tenant: "org_W9bQy1c2d3e4f5g6",
      email: "alice@acme.example",
      roles: ["support", "billing"],
    });
    expect(p.scopes).toEqual(["openid", "profile", "email", "customers:read", "refunds:write"]);
  });
});

describe("okta", () => {
  const issuer = "https://dev-123456.okta.com/oauth2/default";
  const token = () => ({
    ver: 1,
    jti: "AT.9x8y7z",
    iss: issuer,
    aud: "api://default",
    iat: now(),
    exp: now() + 3600,
    cid: "0oa1b2c3d4e5f6g7h8i9",
    uid: "00u1abcdEFGHijkl2345",
    scp: ["openid", "customers:read", "orders:write"],
    auth_time: now() - 10,
    sub: "alice@acme.example",
    groups: ["Everyone", "Support"],
  });

  it("maps scp (an array) and groups; the subject is Okta's sub (the login)", async () => {
    const p = await principalOf([config({ issuer, audience: "api://default", preset: "okta" })], token());
    expect(p).toMatchObject({
      sub: "alice@acme.example",
      tenant: null,
      email: null,
      roles: ["Everyone", "Support"],
    });
    expect(p.scopes).toEqual(["openid", "customers:read", "orders:write"]);
  });

  it("uses the immutable uid when the config maps subject: uid", async () => {
    const p = await principalOf(
      [config({ issuer, audience: "api://default", preset: "okta", claims: { subject: "uid" } })],
      token(),
    );
    expect(p.sub).toBe("00u1abcdEFGHijkl2345");
    expect(p.user).toBe("00u1abcdEFGHijkl2345");
  });
});

describe("entra", () => {
  const tid = "72f988bf-86f1-41af-91ab-2d7cd011db47";
  const issuer = `https://login.microsoftonline.com/${tid}/v2.0`;
  it("maps oid, tid, scp + roles, and preferred_username as the email", async () => {
    const p = await principalOf([config({ issuer, audience: "api://a1b2c3d4-agents", preset: "entra" })], {
      aud: "api://a1b2c3d4-agents",
      iss: issuer,
      iat: now(),
      nbf: now(),
      exp: now() + 3600,
      aio: "AXQAi/8TAAAA",
      azp: "c44b4083-3bb0-49c1-b47d-974e53cbdf3c",
      name: "Alice Example",
      oid: "00000000-0000-0000-66f3-3332eca7ea81",
      preferred_username: "alice@contoso.com",
      roles: ["Tickets.Admin"],
      scp: "Customers.Read Orders.Write",
      sub: "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
      tid,
      ver: "2.0",
    });
    expect(p).toMatchObject({
      sub: "00000000-0000-0000-66f3-3332eca7ea81",
      tenant: tid,
      email: "alice@contoso.com",
      roles: ["Tickets.Admin"],
    });
    expect(p.scopes).toEqual(["Customers.Read", "Orders.Write", "Tickets.Admin"]);
  });

  it("prefers email over preferred_username, and falls back to upn", async () => {
    const base = { iss: issuer, aud: "api://x", exp: now() + 60, oid: "o", tid };
    const cfg = [config({ issuer, audience: "api://x", preset: "entra" })];
    expect((await principalOf(cfg, { ...base, email: "a@x", preferred_username: "b@x" })).email).toBe("a@x");
    expect((await principalOf(cfg, { ...base, upn: "c@x" })).email).toBe("c@x");
  });

  it("rejects an Entra token without oid even if it has sub", async () => {
    const identity = createIdentity({ issuers: [config({ issuer, audience: "api://x", preset: "entra" })] });
    const token = signToken(
      { alg: "EdDSA", kid: key.kid },
      { iss: issuer, aud: "api://x", exp: now() + 60, sub: "s" },
      key,
    );
    await expect(identity.verify(token)).rejects.toMatchObject({ code: "ERR_TOKEN_CLAIM_INVALID" });
  });
});

describe("cognito", () => {
  const issuer = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEfGhI";
  const clientId = "7abcdefghijklmnopqrstuvwx1";
  const access = (extra: Record<string, unknown> = {}) => ({
    sub: "5f2c1a0e-1111-2222-3333-444455556666",
    "cognito:groups": ["admins", "support"],
    iss: issuer,
    version: 2,
    client_id: clientId,
    origin_jti: "0b1c2d3e",
    token_use: "access",
    scope: "aws.cognito.signin.user.admin customers/read",
    auth_time: now(),
    exp: now() + 3600,
    iat: now(),
    jti: "9a8b7c6d",
    username: "alice",
    ...extra,
  });

  it("checks the audience against client_id (access tokens have no aud) and maps groups", async () => {
    const p = await principalOf([config({ issuer, audience: clientId, preset: "cognito" })], access());
    expect(p).toMatchObject({
      sub: "5f2c1a0e-1111-2222-3333-444455556666",
      roles: ["admins", "support"],
      email: "alice",
      tenant: null,
    });
    expect(p.scopes).toEqual(["aws.cognito.signin.user.admin", "customers/read", "admins", "support"]);
  });

  it("rejects an access token of another app client", async () => {
    const identity = createIdentity({ issuers: [config({ issuer, audience: clientId, preset: "cognito" })] });
    const token = signToken({ alg: "EdDSA", kid: key.kid }, access({ client_id: "someotherclient" }), key);
    await expect(identity.verify(token)).rejects.toMatchObject({ code: "ERR_TOKEN_AUDIENCE_INVALID" });
  });

  it("refuses a Cognito ID token: token_use must be access", async () => {
    const identity = createIdentity({ issuers: [config({ issuer, audience: clientId, preset: "cognito" })] });
    const idToken = {
      sub: "5f2c1a0e-1111-2222-3333-444455556666",
      aud: clientId,
      iss: issuer,
      token_use: "id",
      exp: now() + 3600,
      email: "alice@acme.example",
    };
    const token = signToken({ alg: "EdDSA", kid: key.kid }, idToken, key);
    await expect(identity.verify(token)).rejects.toMatchObject({ code: "ERR_TOKEN_TYPE_INVALID" });
  });

  it("reads custom:tenant and email when a pre-token-generation trigger adds them", async () => {
    const p = await principalOf(
      [config({ issuer, audience: clientId, preset: "cognito" })],
      access({ "custom:tenant": "acme", email: "alice@acme.example" }),
    );
    expect(p).toMatchObject({ tenant: "acme", email: "alice@acme.example" });
  });
});

describe("keycloak", () => {
  const issuer = "https://kc.example.com/realms/acme";
  it("maps realm_access.roles (a dotted path) into roles and scopes", async () => {
    const p = await principalOf([config({ issuer, audience: "agents-api", preset: "keycloak" })], {
      exp: now() + 300,
      iat: now(),
      jti: "onrtac:1f2e3d",
      iss: issuer,
      aud: ["account", "agents-api"],
      sub: "f5b3c1d2-aaaa-bbbb-cccc-0123456789ab",
      typ: "Bearer",
      azp: "agent-app",
      realm_access: { roles: ["offline_access", "support", "default-roles-acme"] },
      resource_access: { account: { roles: ["manage-account"] } },
      scope: "openid email profile",
      email_verified: true,
      preferred_username: "alice",
      email: "alice@acme.example",
      tenant: "acme",
    });
    expect(p).toMatchObject({ tenant: "acme", email: "alice@acme.example" });
    expect(p.roles).toEqual(["offline_access", "support", "default-roles-acme"]);
    expect(p.scopes).toEqual([
      "openid",
      "email",
      "profile",
      "offline_access",
      "support",
      "default-roles-acme",
    ]);
  });
});

describe("google", () => {
  const issuer = "https://accounts.google.com";
  it("maps hd as the tenant and email; an ID token carries no scopes", async () => {
    const p = await principalOf(
      [config({ issuer, audience: "1234-abc.apps.googleusercontent.com", preset: "google" })],
      {
        iss: issuer,
        azp: "1234-abc.apps.googleusercontent.com",
        aud: "1234-abc.apps.googleusercontent.com",
        sub: "110248495921238986420",
        hd: "acme.example",
        email: "alice@acme.example",
        email_verified: true,
        iat: now(),
        exp: now() + 3600,
      },
    );
    expect(p).toMatchObject({
      sub: "110248495921238986420",
      tenant: "acme.example",
      email: "alice@acme.example",
    });
    expect(p.scopes).toEqual([]);
  });
});

describe("generic and config overrides", () => {
  const issuer = "https://idp.example.com";
  it("unites scope and scp, removes duplicates, keeps token order", async () => {
    const p = await principalOf([config({ issuer, audience: "api" })], {
      iss: issuer,
      aud: "api",
      sub: "u1",
      exp: now() + 60,
      scope: "a b  a c",
      scp: ["c", "d", "a", 7],
      roles: "admin",
      tenant: "acme",
    });
    expect(p.scopes).toEqual(["a", "b", "c", "d"]);
    expect(p.roles).toEqual(["admin"]);
    expect(p.tenant).toBe("acme");
  });

  it("uses a literal tenant for every token of the issuer", async () => {
    const p = await principalOf(
      [config({ issuer, audience: "api", claims: { tenant: { value: "globex" } } })],
      {
        iss: issuer,
        aud: "api",
        sub: "u1",
        exp: now() + 60,
        tenant: "ignored",
      },
    );
    expect(p.tenant).toBe("globex");
  });

  it("maps scopes from several configured paths, one of them nested", async () => {
    const p = await principalOf(
      [config({ issuer, audience: "api", claims: { scopes: ["scope", "ext.perms"], roles: ["r1", "r2"] } })],
      {
        iss: issuer,
        aud: "api",
        sub: "u",
        exp: now() + 60,
        scope: "x",
        ext: { perms: ["y", "x"] },
        r1: ["a"],
        r2: "b",
      },
    );
    expect(p.scopes).toEqual(["x", "y"]);
    expect(p.roles).toEqual(["a", "b"]);
  });

  it("rejects a tenant claim that is not a string", async () => {
    const identity = createIdentity({ issuers: [config({ issuer, audience: "api" })] });
    const token = signToken(
      { alg: "EdDSA", kid: key.kid },
      { iss: issuer, aud: "api", sub: "u", exp: now() + 60, tenant: ["a"] },
      key,
    );
    await expect(identity.verify(token)).rejects.toMatchObject({ code: "ERR_TOKEN_CLAIM_INVALID" });
  });

  it("returns a frozen principal", async () => {
    const p = await principalOf([config({ issuer, audience: "api" })], {
      iss: issuer,
      aud: "api",
      sub: "u",
      exp: now() + 60,
      scope: "a",
    });
    expect(Object.isFrozen(p) && Object.isFrozen(p.scopes) && Object.isFrozen(p.claims)).toBe(true);
  });
});

describe("user ids with several issuers", () => {
  const a = "https://a.example.com/";
  const b = "https://b.example.com";
  const claims = (iss: string) => ({ iss, aud: "api", sub: "alice", exp: now() + 60 });

  it("leaves the subject alone with one issuer and prefixes `<issuer>#` with several", async () => {
    expect((await principalOf([config({ issuer: a, audience: "api" })], claims(a))).user).toBe("alice");
    const both = [config({ issuer: a, audience: "api" }), config({ issuer: b, audience: "api" })];
    expect((await principalOf(both, claims(a))).user).toBe("https://a.example.com/#alice");
    expect((await principalOf(both, claims(b))).user).toBe("https://b.example.com#alice");
  });

  it("uses an issuer's user_prefix when set, even alone", async () => {
    const both = [
      config({ issuer: a, audience: "api", user_prefix: "a:" }),
      config({ issuer: b, audience: "api" }),
    ];
    expect((await principalOf(both, claims(a))).user).toBe("a:alice");
    expect(
      (await principalOf([config({ issuer: a, audience: "api", user_prefix: "" })], claims(a))).user,
    ).toBe("alice");
  });

  it("rejects a token from an issuer that is not trusted", async () => {
    const identity = createIdentity({
      issuers: [config({ issuer: a, audience: "api" }), config({ issuer: b, audience: "api" })],
    });
    const token = signToken({ alg: "EdDSA", kid: key.kid }, claims("https://c.example.com"), key);
    await expect(identity.verify(token)).rejects.toMatchObject({ code: "ERR_TOKEN_ISSUER_UNKNOWN" });
  });
});

describe("readClaim", () => {
  it("prefers an exact key (URL or colon names), then walks dotted paths, longest key first", () => {
    const claims = {
      "cognito:groups": ["g"],
      "https://example.com/roles": ["r"],
      "https://example.com/claims": { roles: ["nested"] },
      realm_access: { roles: ["kc"] },
      "a.b": "flat",
      a: { b: "nested" },
    };
    expect(readClaim(claims, "cognito:groups")).toEqual(["g"]);
    expect(readClaim(claims, "https://example.com/roles")).toEqual(["r"]);
    expect(readClaim(claims, "https://example.com/claims.roles")).toEqual(["nested"]);
    expect(readClaim(claims, "realm_access.roles")).toEqual(["kc"]);
    expect(readClaim(claims, "a.b")).toBe("flat");
    expect(readClaim(claims, "realm_access.missing")).toBeUndefined();
  });

  it("never reads inherited properties", () => {
    const claims = JSON.parse('{"sub":"u","__proto__":{"polluted":"yes"}}') as Record<string, unknown>;
    expect(readClaim(claims, "constructor")).toBeUndefined();
    expect(readClaim(claims, "toString")).toBeUndefined();
    expect(readClaim(claims, "__proto__.polluted")).toBe("yes"); // an own key named __proto__, not the prototype
    expect(readClaim({}, "__proto__")).toBeUndefined();
  });
});
