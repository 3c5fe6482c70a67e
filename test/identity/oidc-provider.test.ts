import { afterEach, describe, expect, it } from "vitest";
import { IssuerConfig } from "../../src/config/issuer.js";
import { isOnbehalfError } from "../../src/errors.js";
import { createIdentity, type Identity } from "../../src/identity/verify.js";
import {
  DEFAULT_RESOURCE,
  generateTestKey,
  type OidcProviderHandle,
  startOidcProvider,
} from "../support/oidc.js";

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function provider(options: Parameters<typeof startOidcProvider>[0] = {}): Promise<OidcProviderHandle> {
  const idp = await startOidcProvider(options);
  cleanups.push(() => idp.close());
  return idp;
}

/** A clock the test moves: starts at the real time (the provider stamps real iat/exp). */
function manualClock() {
  let offset = 0;
  return { now: () => Date.now() + offset, advance: (seconds: number) => (offset += seconds * 1000) };
}

function identityFor(
  idp: OidcProviderHandle,
  extra: Record<string, unknown> = {},
  now?: () => number,
): Identity {
  const identity = createIdentity({
    issuers: [
      IssuerConfig.parse({
        issuer: idp.issuer,
        audience: DEFAULT_RESOURCE,
        algorithms: ["RS256", "ES256"],
        require_typ: "at+jwt",
        ...extra,
      }),
    ],
    ...(now ? { now } : {}),
  });
  cleanups.push(() => identity.close());
  return identity;
}

function header(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split(".")[0] ?? "", "base64url").toString("utf8"));
}

describe("tokens from a real oidc-provider, keys found by OIDC discovery", () => {
  it("verifies an RS256 JWT access token and maps its claims", async () => {
    const idp = await provider();
    const identity = identityFor(idp);
    const token = await idp.getToken({
      alg: "RS256",
      scope: "customers:read",
      claims: { sub: "alice", tenant: "acme" },
    });
    expect(header(token)).toMatchObject({ alg: "RS256", typ: "at+jwt" });

    const principal = await identity.verify(token);
    expect(principal).toMatchObject({ user: "alice", sub: "alice", issuer: idp.issuer, tenant: "acme" });
    expect(principal.scopes).toEqual(["customers:read"]);
    expect(principal.claims["aud"]).toBe(DEFAULT_RESOURCE);
    expect(idp.requests("/.well-known/openid-configuration")).toBe(1);
    expect(identity.jwksFetches(idp.issuer)).toBe(1);
    expect(idp.requests("/jwks")).toBe(1);
  });

  it("verifies an ES256 token from the same key set without another fetch", async () => {
    const idp = await provider();
    const identity = identityFor(idp);
    await identity.verify(await idp.getToken({ alg: "RS256" }));
    const token = await idp.getToken({ alg: "ES256", claims: { sub: "bob" } });
    expect(header(token)).toMatchObject({ alg: "ES256" });
    await expect(identity.verifyAuthorization(`Bearer ${token}`)).resolves.toMatchObject({ sub: "bob" });
    expect(identity.jwksFetches(idp.issuer)).toBe(1);
  });

  it("rejects the provider's token for another resource (audience) and when ES256 is not allowed", async () => {
    const idp = await provider();
    const identity = identityFor(idp);
    const other = await idp.getToken({ resource: "https://other.example" });
    await expect(identity.verify(other)).rejects.toMatchObject({ code: "ERR_TOKEN_AUDIENCE_INVALID" });
    const rsOnly = identityFor(idp, { algorithms: ["RS256"] });
    await expect(rsOnly.verify(await idp.getToken({ alg: "ES256" }))).rejects.toMatchObject({
      code: "ERR_TOKEN_ALG_NOT_ALLOWED",
    });
  });

  it("picks up a new signing key (listed first) with exactly one refetch once the cooldown allows it", async () => {
    const oldRsa = generateTestKey("RS256", "rsa-old");
    const ec = generateTestKey("ES256", "ec-1");
    const idp = await provider({ keys: [oldRsa, ec] });
    const clock = manualClock();
    const identity = identityFor(idp, {}, clock.now);
    await identity.verify(await idp.getToken({ claims: { sub: "alice" } }));
    expect(identity.jwksFetches(idp.issuer)).toBe(1);

    const newRsa = generateTestKey("RS256", "rsa-new");
    await idp.rotate([newRsa, oldRsa, ec]);
    const token = await idp.getToken({ claims: { sub: "alice" } });
    expect(header(token)["kid"]).toBe("rsa-new");

    // Within the cooldown (30 s) an unknown kid does not reach the IdP.
    await expect(identity.verify(token)).rejects.toMatchObject({ code: "ERR_JWKS_NO_MATCHING_KEY" });
    expect(identity.jwksFetches(idp.issuer)).toBe(1);
    clock.advance(31);
    await expect(identity.verify(token)).resolves.toMatchObject({ sub: "alice" });
    expect(identity.jwksFetches(idp.issuer)).toBe(2);
    expect(idp.requests("/jwks")).toBe(2);
  });

  it("rejects a token signed with a removed key at once when a refetch sees the removal, even if it was cached", async () => {
    const oldRsa = generateTestKey("RS256", "rsa-old");
    const idp = await provider({ keys: [oldRsa] });
    const clock = manualClock();
    const identity = identityFor(idp, {}, clock.now);
    const oldToken = await idp.getToken({ claims: { sub: "alice" } });
    await identity.verify(oldToken);
    await expect(identity.verify(oldToken)).resolves.toMatchObject({ sub: "alice" }); // cached

    const newRsa = generateTestKey("RS256", "rsa-new");
    await idp.rotate([newRsa]);
    clock.advance(31);
    // A token with the new kid makes the verifier refetch; the refetch shows rsa-old is gone.
    await identity.verify(await idp.getToken({ claims: { sub: "bob" } }));
    expect(identity.jwksFetches(idp.issuer)).toBe(2);

    const error = await identity.verify(oldToken).catch((e: unknown) => e);
    expect(isOnbehalfError(error, "ERR_JWKS_NO_MATCHING_KEY")).toBe(true);
    expect((error as Error).message).toContain('kid "rsa-old"');
    expect(identity.jwksFetches(idp.issuer)).toBe(2); // the cooldown holds: no refetch for the removed kid
  });

  it("re-verifies a cached token once the key set is stale, so a removed key stops working", async () => {
    const oldRsa = generateTestKey("RS256", "rsa-old");
    const idp = await provider({ keys: [oldRsa], ttlSeconds: 3600 });
    const clock = manualClock();
    const identity = identityFor(idp, { jwks_cache_seconds: 120 }, clock.now);
    const oldToken = await idp.getToken({ claims: { sub: "alice" } });
    await identity.verify(oldToken);

    await idp.rotate([generateTestKey("RS256", "rsa-new")]);
    clock.advance(60);
    await expect(identity.verify(oldToken)).resolves.toMatchObject({ sub: "alice" }); // keys still fresh: cached
    expect(identity.jwksFetches(idp.issuer)).toBe(1);

    clock.advance(61);
    await expect(identity.verify(oldToken)).rejects.toMatchObject({ code: "ERR_JWKS_NO_MATCHING_KEY" });
    expect(identity.jwksFetches(idp.issuer)).toBe(2);
  });
});
