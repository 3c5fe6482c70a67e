/** The development issuer and onbehalf's own signing keys. */
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { IssuerConfig } from "../../src/config/issuer.js";
import { DEV_AUDIENCE, DEV_ISSUER, devIssuerConfig, mintDevToken } from "../../src/identity/dev-issuer.js";
import { jwkThumbprint } from "../../src/identity/jwk.js";
import { generateSigningKey, loadOrCreateSigningKey, signJwt } from "../../src/identity/keys.js";
import { createIdentity } from "../../src/identity/verify.js";

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "onbehalf-keys-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function header(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split(".")[0] ?? "", "base64url").toString("utf8"));
}

describe("development tokens", () => {
  it("mints a token that the dev issuer config verifies, with scopes space-separated in scope", async () => {
    const key = loadOrCreateSigningKey(join(dir, "dev.jwk"));
    const identity = createIdentity({ issuers: [devIssuerConfig(key.publicJwk)] });
    const token = mintDevToken(key, {
      sub: "alice",
      tenant: "acme",
      scopes: ["customers:read", "refunds:write"],
      email: "alice@acme.example",
      roles: ["support"],
      ttlSeconds: 120,
    });
    expect(header(token)).toMatchObject({ alg: "EdDSA", kid: key.kid, typ: "JWT" });
    const principal = await identity.verify(token);
    expect(principal).toMatchObject({
      user: "alice",
      sub: "alice",
      issuer: DEV_ISSUER,
      tenant: "acme",
      email: "alice@acme.example",
      scopes: ["customers:read", "refunds:write"],
      roles: ["support"],
    });
    expect(principal.claims).toMatchObject({ aud: DEV_AUDIENCE, scope: "customers:read refunds:write" });
    expect(principal.exp - Number(principal.claims["iat"])).toBe(120);
    identity.close();
  });

  it("rejects a token minted by another key, and one minted for another audience", async () => {
    const trusted = generateSigningKey();
    const other = generateSigningKey();
    const identity = createIdentity({ issuers: [devIssuerConfig(trusted.publicJwk)] });
    await expect(
      identity.verify(mintDevToken(other, { sub: "eve", tenant: "acme", scopes: [] })),
    ).rejects.toMatchObject({
      code: "ERR_JWKS_NO_MATCHING_KEY",
    });
    const elsewhere = mintDevToken(trusted, {
      sub: "alice",
      tenant: "acme",
      scopes: [],
      audience: "https://crm.example",
    });
    await expect(identity.verify(elsewhere)).rejects.toMatchObject({ code: "ERR_TOKEN_AUDIENCE_INVALID" });
    identity.close();
  });

  it("builds an IssuerConfig the schema accepts, trusting only the key's algorithm", () => {
    const key = generateSigningKey("ES256");
    const config = devIssuerConfig(key.publicJwk);
    expect(IssuerConfig.parse(config)).toEqual(config);
    expect(config).toMatchObject({
      issuer: DEV_ISSUER,
      audience: DEV_AUDIENCE,
      algorithms: ["ES256"],
      preset: "generic",
    });
  });

  it("keeps plain user ids for dev users, and does not make a single real issuer qualify its users", async () => {
    const key = generateSigningKey();
    const real = IssuerConfig.parse({ issuer: "https://idp.example.com/", audience: "api" });
    const other = IssuerConfig.parse({ issuer: "https://other.example.com/", audience: "api" });
    const identity = createIdentity({ issuers: [real, devIssuerConfig(key.publicJwk)] });
    const principal = await identity.verify(
      mintDevToken(key, { sub: "alice", tenant: "acme", scopes: ["a"] }),
    );
    expect(principal.user).toBe("alice");
    identity.close();
    // two configured issuers qualify their users; the dev issuer still does not
    const two = createIdentity({ issuers: [real, other, devIssuerConfig(key.publicJwk)] });
    expect((await two.verify(mintDevToken(key, { sub: "bob", tenant: "acme", scopes: [] }))).user).toBe(
      "bob",
    );
    two.close();
  });
});

describe("signing keys", () => {
  it("creates the key file (and its directories) with mode 0600, and reuses it on the next load", () => {
    const path = join(dir, "nested", "keys", "onbehalf.jwk");
    const created = loadOrCreateSigningKey(path);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const stored = JSON.parse(readFileSync(path, "utf8"));
    expect(stored).toMatchObject({ kty: "OKP", crv: "Ed25519", kid: created.kid, alg: "EdDSA", use: "sig" });
    expect(typeof stored.d).toBe("string");

    const loaded = loadOrCreateSigningKey(path);
    expect(loaded.kid).toBe(created.kid);
    expect(loaded.publicJwk).toEqual(created.publicJwk);
    expect(loaded.publicJwk).not.toHaveProperty("d");
  });

  it("uses the RFC 7638 thumbprint as kid, for Ed25519 and P-256", () => {
    for (const alg of ["EdDSA", "ES256"] as const) {
      const key = loadOrCreateSigningKey(join(dir, `${alg}.jwk`), alg);
      expect(key.alg).toBe(alg);
      expect(key.kid).toBe(jwkThumbprint(key.publicJwk));
      expect(key.publicJwk.crv).toBe(alg === "EdDSA" ? "Ed25519" : "P-256");
    }
  });

  it("lets an existing key file decide the algorithm", () => {
    const path = join(dir, "k.jwk");
    const es = loadOrCreateSigningKey(path, "ES256");
    expect(loadOrCreateSigningKey(path, "EdDSA")).toMatchObject({ alg: "ES256", kid: es.kid });
  });

  it("refuses a damaged key file with a message that says how to fix it", () => {
    const path = join(dir, "broken.jwk");
    writeFileSync(path, "{ not json");
    expect(() => loadOrCreateSigningKey(path)).toThrow(
      expect.objectContaining({ code: "ERR_CONFIG_INVALID" }),
    );
    writeFileSync(path, JSON.stringify(generateSigningKey().publicJwk));
    expect(() => loadOrCreateSigningKey(path)).toThrow(/no private part[\s\S]*delete it to create a new key/);
  });

  it("signs JWTs with a chosen typ that our verifier accepts", async () => {
    const key = generateSigningKey("ES256");
    const now = Math.floor(Date.now() / 1000);
    const jwt = signJwt(key, { iss: "urn:test", aud: "api", sub: "svc", exp: now + 60 }, { typ: "at+jwt" });
    expect(header(jwt)).toEqual({ alg: "ES256", typ: "at+jwt", kid: key.kid });
    const identity = createIdentity({
      issuers: [
        IssuerConfig.parse({
          issuer: "urn:test",
          audience: "api",
          jwks: { keys: [{ ...key.publicJwk }] },
          require_typ: "at+jwt",
        }),
      ],
    });
    await expect(identity.verify(jwt)).resolves.toMatchObject({ sub: "svc" });
    identity.close();
  });
});
