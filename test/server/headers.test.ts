/**
 * Header values the server writes are printable ASCII. A 401's `WWW-Authenticate` carries the reason, and the
 * reason may quote what the token said (its unverified `iss`, its `alg`): text the caller chose. Node refuses
 * to send a header with a character outside Latin-1, which turned the 401 into a 500.
 */
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { OnbehalfServer } from "../../src/server/app.js";
import { headerSafe } from "../../src/server/http.js";
import { generateTestKey, type OidcProviderHandle, signToken, startOidcProvider } from "../support/oidc.js";
import { call, startTestServer } from "../support/server.js";

const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

let idp: OidcProviderHandle;
let server: OnbehalfServer;

beforeAll(async () => {
  idp = await startOidcProvider();
  server = await startTestServer(idp);
});
afterAll(async () => {
  await server?.close();
  await idp?.close();
});

const key = generateTestKey("ES256");
const now = () => Math.floor(Date.now() / 1000);
/** A token signed with a key no issuer has; the alg cases carry a made-up signature (no alg to sign with). */
const forged = (header: Record<string, unknown>, claims: Record<string, unknown>) =>
  signToken(
    { alg: "ES256", kid: key.kid, typ: "at+jwt", ...header },
    { sub: "mallory", iat: now(), exp: now() + 300, ...claims },
    key,
    header["alg"] === undefined ? {} : { signature: "c2lnbmF0dXJl" },
  );

describe("WWW-Authenticate on a 401", () => {
  const cases: [string, string][] = [
    ["an iss outside Latin-1", forged({}, { iss: "https://idp.example/\u2603" })],
    ["an iss with an emoji (a surrogate pair)", forged({}, { iss: "https://idp.example/\u{1F600}" })],
    ["an iss in Latin-1 but not ASCII", forged({}, { iss: "https://idp.example/caf\u00e9" })],
    ["an iss with quotes, backslashes and line breaks", forged({}, { iss: 'a"b\\c\r\nX-Evil: 1' })],
    ["an alg outside Latin-1", forged({ alg: "ES256\u2603" }, { iss: "https://idp.example/" })],
  ];

  for (const [what, token] of cases) {
    it(`answers 401 with a printable-ASCII header for a token with ${what}`, async () => {
      for (const [method, path, body] of [
        ["POST", "/v1/verify", undefined],
        ["POST", "/v1/check", { tool: "get_customer", args: {}, agent: { name: "bot" } }],
      ] as const) {
        const r = await call(server.url, method, path, { token, ...(body === undefined ? {} : { body }) });
        expect(r.status, `${method} ${path}`).toBe(401);
        const header = r.headers.get("www-authenticate") ?? "";
        expect(header).toMatch(/^Bearer error="invalid_token", error_description="[^"\\]*"$/);
        expect(header).toMatch(PRINTABLE_ASCII);
        expect(r.body.error.code).toMatch(/^ERR_TOKEN_/);
      }
    });
  }

  it("keeps the reason readable: what is not printable ASCII becomes ?", async () => {
    const r = await call(server.url, "POST", "/v1/verify", {
      token: forged({}, { iss: "https://idp.example/\u2603" }),
    });
    expect(r.status).toBe(401);
    expect(r.headers.get("www-authenticate")).toContain("https://idp.example/?");
  });
});

describe("headerSafe", () => {
  it("returns printable ASCII without quotes or backslashes, at most 200 characters, for any text", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 400 }), (text) => {
        const safe = headerSafe(text);
        expect(safe).toMatch(PRINTABLE_ASCII);
        expect(safe).not.toMatch(/["\\]/);
        expect(safe.length).toBeLessThanOrEqual(200);
      }),
    );
  });

  it("leaves printable ASCII as it is, quotes and backslashes aside", () => {
    expect(headerSafe("the token has expired (exp 1700000000)")).toBe(
      "the token has expired (exp 1700000000)",
    );
    expect(headerSafe('iss "a\\b"')).toBe("iss 'a'b'");
    expect(headerSafe("caf\u00e9 \u2603 \u{1F600}\r\n")).toBe("caf? ? ???");
  });
});
