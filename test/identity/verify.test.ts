/** The verifier's surface: the Authorization header, bare tokens, closing, and fail-closed errors. */
import { describe, expect, it } from "vitest";
import { IssuerConfig } from "../../src/config/issuer.js";
import { OnbehalfError } from "../../src/errors.js";
import { createIdentity } from "../../src/identity/verify.js";
import { generateTestKey, signToken } from "../support/oidc.js";

const ISSUER = "https://idp.verify.test/";
const key = generateTestKey("EdDSA", "k1");
const identity = () =>
  createIdentity({
    issuers: [IssuerConfig.parse({ issuer: ISSUER, audience: "api", jwks: { keys: [key.publicJwk] } })],
  });
const token = () => {
  const now = Math.floor(Date.now() / 1000);
  return signToken(
    { alg: "EdDSA", kid: "k1" },
    { iss: ISSUER, aud: "api", sub: "alice", exp: now + 60 },
    key,
  );
};

describe("verifyAuthorization", () => {
  it("accepts Bearer in any case, with extra spaces around the token", async () => {
    const id = identity();
    const t = token();
    for (const header of [`Bearer ${t}`, `bearer ${t}`, `BEARER  ${t} `, ` Bearer ${t}`]) {
      await expect(id.verifyAuthorization(header)).resolves.toMatchObject({ sub: "alice" });
    }
  });

  it.each([
    ["undefined", undefined],
    ["null", null],
    ["empty", ""],
    ["blank", "   "],
    ["Bearer without a token", "Bearer"],
    ["Bearer and spaces", "Bearer    "],
    ["Basic credentials", "Basic YWxpY2U6c2VjcmV0"],
    ["a bare token", "eyJhbGciOiJFZERTQSJ9.e30.sig"],
  ])("rejects %s as ERR_TOKEN_MISSING", async (_name, header) => {
    await expect(identity().verifyAuthorization(header)).rejects.toMatchObject({
      code: "ERR_TOKEN_MISSING",
      status: 401,
    });
  });

  it("rejects a bearer value with whitespace inside as malformed", async () => {
    await expect(identity().verifyAuthorization(`Bearer ${token()} extra`)).rejects.toMatchObject({
      code: "ERR_TOKEN_MALFORMED",
    });
  });
});

describe("verify", () => {
  it("rejects an empty token as missing and garbage as malformed, always as OnbehalfError with an OAuth error", async () => {
    const id = identity();
    await expect(id.verify("")).rejects.toMatchObject({ code: "ERR_TOKEN_MISSING" });
    for (const garbage of ["abc", "a.b.c", "....", "\u00e9.\u00e9.\u00e9", "e30.e30.e30"]) {
      const error = await id.verify(garbage).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(OnbehalfError);
      expect(error).toMatchObject({ status: 401, oauth: "invalid_token" });
    }
  });

  it("rejects non-string input from JavaScript callers", async () => {
    await expect(identity().verify(42 as unknown as string)).rejects.toMatchObject({
      code: "ERR_TOKEN_MISSING",
    });
  });

  it("lists its issuers, counts no fetches for inline keys, and refuses work after close", async () => {
    const id = identity();
    expect(id.issuers).toEqual([ISSUER]);
    await id.verify(token());
    expect(id.jwksFetches(ISSUER)).toBe(0);
    expect(id.jwksFetches("https://unknown.test/")).toBe(0);
    id.close();
    id.close();
    await expect(id.verify(token())).rejects.toMatchObject({ code: "ERR_CLOSED" });
    await expect(id.verifyAuthorization(`Bearer ${token()}`)).rejects.toMatchObject({ code: "ERR_CLOSED" });
  });

  it("with no trusted issuer, rejects every token as from an unknown issuer", async () => {
    const id = createIdentity({ issuers: [] });
    await expect(id.verify(token())).rejects.toMatchObject({ code: "ERR_TOKEN_ISSUER_UNKNOWN" });
  });
});
