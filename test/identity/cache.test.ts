/** The verified-token cache: exact token → principal, never past exp, dropped when keys change. */
import { afterEach, describe, expect, it } from "vitest";
import { IssuerConfig } from "../../src/config/issuer.js";
import type { ConfigInput } from "../../src/config/schema.js";
import { createIdentity, type Identity } from "../../src/identity/verify.js";
import {
  generateTestKey,
  type JwksServer,
  signToken,
  startJwksServer,
  type TestKey,
} from "../support/oidc.js";

const ISSUER = "https://idp.cache.test/";
const AUDIENCE = "api";
type IssuerInput = Partial<NonNullable<ConfigInput["issuers"]>[number]>;

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function jwksWith(...keys: TestKey[]): Promise<JwksServer> {
  const server = await startJwksServer(keys.map((k) => k.publicJwk));
  cleanups.push(() => server.close());
  return server;
}

function clock() {
  let t = Date.now();
  return { now: () => t, set: (ms: number) => (t = ms), advance: (ms: number) => (t += ms) };
}

function identity(
  overrides: IssuerInput,
  options: { now?: () => number; tokenCacheSize?: number } = {},
): Identity {
  const id = createIdentity({
    issuers: [IssuerConfig.parse({ issuer: ISSUER, audience: AUDIENCE, ...overrides })],
    ...options,
  });
  cleanups.push(() => id.close());
  return id;
}

function token(key: TestKey, claims: Record<string, unknown> = {}, nowMs = Date.now()): string {
  const now = Math.floor(nowMs / 1000);
  return signToken(
    { alg: key.alg, kid: key.kid },
    { iss: ISSUER, aud: AUDIENCE, sub: "alice", iat: now, exp: now + 300, ...claims },
    key,
  );
}

describe("token cache", () => {
  it("serves a verified token from the cache: it still verifies with the JWKS server gone, another token does not", async () => {
    const a = generateTestKey("ES256", "a");
    const jwks = await jwksWith(a);
    const c = clock();
    const id = identity({ jwks_uri: jwks.url, jwks_cooldown_seconds: 1 }, { now: c.now });
    const t1 = token(a);
    const first = await id.verify(t1);
    await jwks.close();

    await expect(id.verify(t1)).resolves.toBe(first); // the very same principal object
    c.advance(1_001); // past the cooldown: an unknown kid may refetch
    const unknownKid = token(generateTestKey("ES256", "b"));
    await expect(id.verify(unknownKid)).rejects.toMatchObject({ code: "ERR_JWKS_UNAVAILABLE" });
    await expect(id.verify(t1)).resolves.toBe(first);
    expect(id.jwksFetches(ISSUER)).toBe(2);
  });

  it("serves an entry only for the very token it was verified for, however alike two tokens end", async () => {
    const key = generateTestKey("EdDSA");
    const id = identity({ jwks: { keys: [key.publicJwk] } });
    const alice = token(key);
    const principal = await id.verify(alice);
    // Same last 32+ characters (the signature's end), another payload: never alice's principal.
    const [h, , sig] = alice.split(".");
    const forged = `${h}.${Buffer.from(JSON.stringify({ iss: ISSUER, aud: AUDIENCE, sub: "mallory", exp: 9e9 })).toString("base64url")}.${sig}`;
    expect(forged.slice(-40)).toBe(alice.slice(-40));
    await expect(id.verify(forged)).rejects.toMatchObject({ code: "ERR_TOKEN_SIGNATURE_INVALID" });
    await expect(id.verifyAuthorization(`Bearer ${forged}`)).rejects.toMatchObject({
      code: "ERR_TOKEN_SIGNATURE_INVALID",
    });
    // the same token as a new string, bare and in a header, is a hit
    await expect(id.verify(Buffer.from(alice).toString())).resolves.toBe(principal);
    await expect(id.verifyAuthorization(`Bearer ${alice}`)).resolves.toBe(principal);
    // a header a cached token cannot make valid: whitespace inside stays malformed
    await expect(
      id.verifyAuthorization(`Bearer ${alice.slice(0, 10)} ${alice.slice(10)}`),
    ).rejects.toMatchObject({
      code: "ERR_TOKEN_MALFORMED",
    });
  });

  it("never serves an entry at or after the token's exp", async () => {
    const key = generateTestKey("EdDSA");
    const c = clock();
    const id = identity({ jwks: { keys: [key.publicJwk] }, clock_tolerance_seconds: 0 }, { now: c.now });
    const exp = Math.floor(c.now() / 1000) + 60;
    const t = token(key, { exp }, c.now());
    const principal = await id.verify(t);

    c.set(exp * 1000 - 1);
    await expect(id.verify(t)).resolves.toBe(principal);
    c.set(exp * 1000);
    await expect(id.verify(t)).rejects.toMatchObject({ code: "ERR_TOKEN_EXPIRED" });
  });

  it("re-verifies (and rejects) a cached token once its exp has passed, whatever the clock tolerance", async () => {
    const key = generateTestKey("EdDSA");
    const c = clock();
    const id = identity({ jwks: { keys: [key.publicJwk] }, clock_tolerance_seconds: 30 }, { now: c.now });
    const exp = Math.floor(c.now() / 1000) + 60;
    const t = token(key, { exp }, c.now());
    const principal = await id.verify(t);
    c.set(exp * 1000 + 10_000); // inside the tolerance: verified again, accepted, but not the cached object
    const again = await id.verify(t);
    expect(again).not.toBe(principal);
    expect(again.sub).toBe("alice");
    c.set(exp * 1000 + 31_000);
    await expect(id.verify(t)).rejects.toMatchObject({ code: "ERR_TOKEN_EXPIRED" });
  });

  it("evicts an issuer's cached tokens when a refetch shows a key was removed", async () => {
    const a = generateTestKey("ES256", "a");
    const b = generateTestKey("ES256", "b");
    const jwks = await jwksWith(a);
    const c = clock();
    const id = identity({ jwks_uri: jwks.url, jwks_cooldown_seconds: 1 }, { now: c.now });
    const ta = token(a);
    await id.verify(ta);

    jwks.setKeys([b.publicJwk]);
    c.advance(1_001);
    await expect(id.verify(token(b))).resolves.toMatchObject({ sub: "alice" }); // refetch: a is gone
    await expect(id.verify(ta)).rejects.toMatchObject({ code: "ERR_JWKS_NO_MATCHING_KEY" });
  });

  it("keeps cached tokens when a refetch only adds keys", async () => {
    const a = generateTestKey("ES256", "a");
    const b = generateTestKey("ES256", "b");
    const jwks = await jwksWith(a);
    const c = clock();
    const id = identity({ jwks_uri: jwks.url, jwks_cooldown_seconds: 1 }, { now: c.now });
    const ta = token(a);
    const principal = await id.verify(ta);
    jwks.setKeys([a.publicJwk, b.publicJwk]);
    c.advance(1_001);
    await id.verify(token(b));
    expect(id.jwksFetches(ISSUER)).toBe(2);
    await expect(id.verify(ta)).resolves.toBe(principal);
  });

  it("is bounded: the oldest entry goes first", async () => {
    const key = generateTestKey("EdDSA");
    const id = identity({ jwks: { keys: [key.publicJwk] } }, { tokenCacheSize: 2 });
    const [t1, t2, t3] = ["u1", "u2", "u3"].map((sub) => token(key, { sub }));
    const p1 = await id.verify(t1 as string);
    const p2 = await id.verify(t2 as string);
    const p3 = await id.verify(t3 as string);
    await expect(id.verify(t3 as string)).resolves.toBe(p3);
    await expect(id.verify(t2 as string)).resolves.toBe(p2);
    const again = await id.verify(t1 as string);
    expect(again).not.toBe(p1);
    expect(again.sub).toBe("u1");
  });

  it("caches nothing with tokenCacheSize 0, and never caches a rejection", async () => {
    const key = generateTestKey("EdDSA");
    const id = identity({ jwks: { keys: [key.publicJwk] } }, { tokenCacheSize: 0 });
    const t = token(key);
    expect(await id.verify(t)).not.toBe(await id.verify(t));

    const c = clock();
    const cached = identity({ jwks: { keys: [key.publicJwk] } }, { now: c.now });
    const early = token(key, { nbf: Math.floor(c.now() / 1000) + 120 }, c.now());
    await expect(cached.verify(early)).rejects.toMatchObject({ code: "ERR_TOKEN_NOT_YET_VALID" });
    c.advance(121_000);
    await expect(cached.verify(early)).resolves.toMatchObject({ sub: "alice" });
  });

  it("drops everything on close", async () => {
    const key = generateTestKey("EdDSA");
    const id = identity({ jwks: { keys: [key.publicJwk] } });
    const t = token(key);
    await id.verify(t);
    id.close();
    await expect(id.verify(t)).rejects.toMatchObject({ code: "ERR_CLOSED" });
  });
});
