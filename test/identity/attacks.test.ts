/**
 * The attacks of RFC 8725 (JWT BCP) and draft-ietf-oauth-rfc8725bis, each rejected with its specific code.
 * Keys are served by a real local JWKS server (node:http); attacker-controlled URLs point at a real server
 * that counts requests.
 */
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IssuerConfig } from "../../src/config/issuer.js";
import type { ConfigInput } from "../../src/config/schema.js";
import type { ErrorCode } from "../../src/errors.js";
import { createIdentity, type Identity } from "../../src/identity/verify.js";
import {
  type CountingServer,
  generateTestKey,
  type JwksServer,
  publicPem,
  signToken,
  startCountingServer,
  startJwksServer,
  type TestKey,
} from "../support/oidc.js";

const ISSUER = "https://idp.attack.test/";
const AUDIENCE = "https://api.attack.test";

let rsa: TestKey;
let ec: TestKey;
let attacker: TestKey;
let jwks: JwksServer;
let evil: CountingServer;

beforeAll(async () => {
  rsa = generateTestKey("RS256", "rsa-1");
  ec = generateTestKey("ES256", "ec-1");
  attacker = generateTestKey("RS256", "rsa-1"); // same kid as the real key
  jwks = await startJwksServer([rsa.publicJwk, ec.publicJwk]);
  evil = await startCountingServer({ keys: [attacker.publicJwk] });
});
afterAll(async () => {
  await jwks.close();
  await evil.close();
});

type IssuerInput = Partial<NonNullable<ConfigInput["issuers"]>[number]>;

function identity(overrides: IssuerInput = {}, now?: () => number): Identity {
  return createIdentity({
    issuers: [IssuerConfig.parse({ issuer: ISSUER, audience: AUDIENCE, jwks_uri: jwks.url, ...overrides })],
    ...(now ? { now } : {}),
  });
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

function claims(extra: Record<string, unknown> = {}): Record<string, unknown> {
  const now = nowSeconds();
  return {
    iss: ISSUER,
    aud: AUDIENCE,
    sub: "alice",
    iat: now,
    exp: now + 300,
    scope: "customers:read",
    ...extra,
  };
}

async function rejection(id: Identity, token: string): Promise<{ code: ErrorCode; message: string }> {
  try {
    await id.verify(token);
  } catch (e) {
    return e as { code: ErrorCode; message: string };
  }
  throw new Error("the token was accepted");
}

async function expectCode(id: Identity, token: string, code: ErrorCode): Promise<void> {
  expect((await rejection(id, token)).code).toBe(code);
}

describe("control: the setup accepts honest tokens", () => {
  it("verifies RS256 and ES256 tokens signed with the served keys", async () => {
    const id = identity();
    await expect(id.verify(signToken({ alg: "RS256", kid: "rsa-1" }, claims(), rsa))).resolves.toMatchObject({
      sub: "alice",
    });
    await expect(id.verify(signToken({ alg: "ES256", kid: "ec-1" }, claims(), ec))).resolves.toMatchObject({
      sub: "alice",
    });
  });
});

describe("algorithm attacks", () => {
  it.each(["none", "None", "NONE", "nOnE"])("rejects alg %s, unsigned and signed", async (alg) => {
    const id = identity();
    await expectCode(id, signToken({ alg, kid: "rsa-1" }, claims(), null), "ERR_TOKEN_ALG_NOT_ALLOWED");
    const withSignature = `${signToken({ alg, kid: "rsa-1" }, claims(), null)}${Buffer.alloc(32, 7).toString("base64url")}`;
    await expectCode(id, withSignature, "ERR_TOKEN_ALG_NOT_ALLOWED");
    await expectCode(id, signToken({ alg }, claims(), null), "ERR_TOKEN_ALG_NOT_ALLOWED");
  });

  it("matches alg case-sensitively (rs256 is not RS256) and refuses a missing alg", async () => {
    const id = identity();
    await expectCode(
      id,
      signToken({ alg: "rs256", kid: "rsa-1" }, claims(), rsa, {}),
      "ERR_TOKEN_ALG_NOT_ALLOWED",
    );
    await expectCode(
      id,
      signToken({ kid: "rsa-1" }, claims(), null, { signature: "AAAA" }),
      "ERR_TOKEN_ALG_NOT_ALLOWED",
    );
  });

  describe("RS/HS key confusion: HS256 MACed with the RSA public key", () => {
    const forgeries = () => [
      signToken({ alg: "HS256", kid: "rsa-1" }, claims(), { secret: publicPem(rsa) }),
      signToken({ alg: "HS256", kid: "rsa-1" }, claims(), { secret: JSON.stringify(rsa.publicJwk) }),
      signToken({ alg: "HS256" }, claims(), { secret: Buffer.from(String(rsa.publicJwk.n), "base64url") }),
    ];

    it("is refused when HS256 is not listed", async () => {
      const id = identity();
      for (const token of forgeries()) await expectCode(id, token, "ERR_TOKEN_ALG_NOT_ALLOWED");
    });

    it("cannot be configured: HS256 listed without a secret is a configuration error", () => {
      expect(() => identity({ algorithms: ["RS256", "HS256"] })).toThrow(
        expect.objectContaining({
          code: "ERR_CONFIG_INVALID",
          message: expect.stringContaining("HS256 needs a shared secret"),
        }),
      );
    });

    it("fails the MAC when HS256 is listed with a secret: the public key is never an HMAC key", async () => {
      const secret = "a-real-shared-secret-of-at-least-32-bytes!";
      const id = identity({ algorithms: ["RS256", "HS256"], secret });
      for (const token of forgeries()) await expectCode(id, token, "ERR_TOKEN_SIGNATURE_INVALID");
      await expect(id.verify(signToken({ alg: "HS256" }, claims(), { secret }))).resolves.toMatchObject({
        sub: "alice",
      });
    });
  });

  it("refuses a kid whose key type does not fit alg (ES256 against the RSA key)", async () => {
    const id = identity();
    const token = signToken({ alg: "ES256", kid: "rsa-1" }, claims(), ec);
    await expectCode(id, token, "ERR_TOKEN_ALG_NOT_ALLOWED");
  });

  it("refuses a JWK whose alg differs from the header alg, and a JWK with use: enc", async () => {
    const strictJwks = await startJwksServer([
      { ...rsa.publicJwk, alg: "PS256" },
      { ...ec.publicJwk, use: "enc" },
    ]);
    try {
      const id = identity({ jwks_uri: strictJwks.url });
      await expectCode(
        id,
        signToken({ alg: "RS256", kid: "rsa-1" }, claims(), rsa),
        "ERR_TOKEN_ALG_NOT_ALLOWED",
      );
      await expectCode(
        id,
        signToken({ alg: "ES256", kid: "ec-1" }, claims(), ec),
        "ERR_JWKS_NO_MATCHING_KEY",
      );
    } finally {
      await strictJwks.close();
    }
  });
});

describe("keys from the token itself", () => {
  it("rejects an embedded jwk header signed with the attacker key it embeds", async () => {
    const id = identity();
    const token = signToken({ alg: "RS256", kid: "rsa-1", jwk: attacker.publicJwk }, claims(), attacker);
    await expectCode(id, token, "ERR_TOKEN_HEADER_REJECTED");
  });

  it.each(["jku", "x5u"])(
    "rejects a %s header pointing at the attacker's server, which is never contacted",
    async (name) => {
      const id = identity();
      const token = signToken({ alg: "RS256", kid: "rsa-1", [name]: evil.url }, claims(), attacker);
      await expectCode(id, token, "ERR_TOKEN_HEADER_REJECTED");
      expect(evil.requests).toBe(0);
    },
  );

  it("rejects an x5c certificate chain in the header", async () => {
    const id = identity();
    const token = signToken({ alg: "RS256", kid: "rsa-1", x5c: ["MIIB"] }, claims(), attacker);
    await expectCode(id, token, "ERR_TOKEN_HEADER_REJECTED");
  });
});

describe("psychic ECDSA signatures (CVE-2022-21449) and other forged signatures", () => {
  const n = Buffer.from("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", "hex");
  const cases: [string, Buffer][] = [
    ["r = s = 0 (64 zero bytes)", Buffer.alloc(64)],
    ["r = s = n", Buffer.concat([n, n])],
    ["r = n, s = 0", Buffer.concat([n, Buffer.alloc(32)])],
    ["r = 0, s = 1", Buffer.concat([Buffer.alloc(32), Buffer.alloc(31), Buffer.from([1])])],
    ["a 65-byte signature", Buffer.alloc(65, 1)],
  ];
  it.each(cases)("rejects an ES256 token with %s", async (_name, signature) => {
    const id = identity();
    const token = signToken({ alg: "ES256", kid: "ec-1" }, claims(), null, {
      signature: signature.toString("base64url"),
    });
    await expectCode(id, token, "ERR_TOKEN_SIGNATURE_INVALID");
  });

  it("rejects a token whose payload was changed after signing, and one with an empty signature", async () => {
    const id = identity();
    const [h, , s] = signToken({ alg: "RS256", kid: "rsa-1" }, claims(), rsa).split(".");
    const tampered = `${h}.${Buffer.from(JSON.stringify(claims({ sub: "mallory" }))).toString("base64url")}.${s}`;
    await expectCode(id, tampered, "ERR_TOKEN_SIGNATURE_INVALID");
    await expectCode(id, `${h}.${tampered.split(".")[1]}.`, "ERR_TOKEN_SIGNATURE_INVALID");
  });
});

describe("claims", () => {
  const tolerance = 30;

  it("rejects an expired token (beyond the clock tolerance) and accepts one within it", async () => {
    const id = identity();
    const now = nowSeconds();
    await expectCode(
      id,
      signToken({ alg: "RS256", kid: "rsa-1" }, claims({ exp: now - tolerance - 2 }), rsa),
      "ERR_TOKEN_EXPIRED",
    );
    await expect(
      id.verify(signToken({ alg: "RS256", kid: "rsa-1" }, claims({ iat: now - 100, exp: now - 5 }), rsa)),
    ).resolves.toMatchObject({ sub: "alice" });
  });

  it("requires a numeric exp", async () => {
    const id = identity();
    await expectCode(
      id,
      signToken({ alg: "RS256", kid: "rsa-1" }, claims({ exp: undefined }), rsa),
      "ERR_TOKEN_CLAIM_INVALID",
    );
    await expectCode(
      id,
      signToken({ alg: "RS256", kid: "rsa-1" }, claims({ exp: "2099" }), rsa),
      "ERR_TOKEN_CLAIM_INVALID",
    );
  });

  it("rejects a token that is not valid yet (nbf) and one issued in the future (iat)", async () => {
    const id = identity();
    const now = nowSeconds();
    await expectCode(
      id,
      signToken({ alg: "RS256", kid: "rsa-1" }, claims({ nbf: now + 120 }), rsa),
      "ERR_TOKEN_NOT_YET_VALID",
    );
    await expectCode(
      id,
      signToken({ alg: "RS256", kid: "rsa-1" }, claims({ iat: now + 120, exp: now + 600 }), rsa),
      "ERR_TOKEN_ISSUED_IN_FUTURE",
    );
  });

  it("rejects a wrong iss, a wrong aud and a missing aud", async () => {
    const id = identity();
    await expectCode(
      id,
      signToken({ alg: "RS256", kid: "rsa-1" }, claims({ iss: "https://idp.attack.test" }), rsa),
      "ERR_TOKEN_ISSUER_UNKNOWN",
    );
    await expectCode(
      id,
      signToken({ alg: "RS256", kid: "rsa-1" }, claims({ aud: "https://other.test" }), rsa),
      "ERR_TOKEN_AUDIENCE_INVALID",
    );
    await expectCode(
      id,
      signToken({ alg: "RS256", kid: "rsa-1" }, claims({ aud: ["a", "b"] }), rsa),
      "ERR_TOKEN_AUDIENCE_INVALID",
    );
    await expectCode(
      id,
      signToken({ alg: "RS256", kid: "rsa-1" }, claims({ aud: undefined }), rsa),
      "ERR_TOKEN_AUDIENCE_INVALID",
    );
  });

  it("rejects claims a rule would read as another type: a reserved $typeName key, or absurd nesting", async () => {
    const id = identity();
    const typed = await rejection(
      id,
      signToken({ alg: "RS256", kid: "rsa-1" }, claims({ org: { $typeName: "google.protobuf.Value" } }), rsa),
    );
    expect(typed).toMatchObject({ code: "ERR_TOKEN_CLAIM_INVALID" });
    expect(typed.message).toContain("$typeName");
    let deep: Record<string, unknown> = { leaf: true };
    for (let i = 0; i < 40; i++) deep = { n: deep };
    await expectCode(
      id,
      signToken({ alg: "RS256", kid: "rsa-1" }, claims({ deep }), rsa),
      "ERR_TOKEN_CLAIM_INVALID",
    );
    let fine: Record<string, unknown> = { leaf: true };
    for (let i = 0; i < 20; i++) fine = { n: fine };
    await expect(
      id.verify(signToken({ alg: "RS256", kid: "rsa-1" }, claims({ fine }), rsa)),
    ).resolves.toMatchObject({
      sub: "alice",
    });
  });

  it("rejects a token without a subject", async () => {
    const id = identity();
    await expectCode(
      id,
      signToken({ alg: "RS256", kid: "rsa-1" }, claims({ sub: "" }), rsa),
      "ERR_TOKEN_CLAIM_INVALID",
    );
  });
});

describe("token type (RFC 9068, RFC 8725 §3.11)", () => {
  it("rejects an ID token (typ JWT, or no typ) where at+jwt is required, and accepts application/at+jwt", async () => {
    const id = identity({ require_typ: "at+jwt" });
    await expectCode(
      id,
      signToken({ alg: "RS256", kid: "rsa-1", typ: "JWT" }, claims(), rsa),
      "ERR_TOKEN_TYPE_INVALID",
    );
    await expectCode(id, signToken({ alg: "RS256", kid: "rsa-1" }, claims(), rsa), "ERR_TOKEN_TYPE_INVALID");
    await expect(
      id.verify(signToken({ alg: "RS256", kid: "rsa-1", typ: "application/AT+JWT" }, claims(), rsa)),
    ).resolves.toMatchObject({ sub: "alice" });
  });
});

describe("header extensions", () => {
  it("rejects an unknown crit extension, and crit whatever it lists", async () => {
    const id = identity();
    await expectCode(
      id,
      signToken({ alg: "RS256", kid: "rsa-1", crit: ["exp"], exp: 1 }, claims(), rsa),
      "ERR_TOKEN_HEADER_REJECTED",
    );
    await expectCode(
      id,
      signToken({ alg: "RS256", kid: "rsa-1", crit: [] }, claims(), rsa),
      "ERR_TOKEN_HEADER_REJECTED",
    );
  });

  it("rejects b64: false (RFC 7797), with or without crit", async () => {
    const id = identity();
    await expectCode(
      id,
      signToken({ alg: "RS256", kid: "rsa-1", b64: false, crit: ["b64"] }, claims(), rsa),
      "ERR_TOKEN_HEADER_REJECTED",
    );
    await expectCode(
      id,
      signToken({ alg: "RS256", kid: "rsa-1", b64: false }, claims(), rsa),
      "ERR_TOKEN_HEADER_REJECTED",
    );
  });
});

describe("resource exhaustion", () => {
  it("rejects an oversized token before decoding anything", async () => {
    const id = identity({ max_token_bytes: 1024 });
    await expectCode(id, "!".repeat(1025), "ERR_TOKEN_TOO_LARGE");
    const big = signToken({ alg: "RS256", kid: "rsa-1" }, claims({ pad: "x".repeat(2000) }), rsa);
    await expectCode(id, big, "ERR_TOKEN_TOO_LARGE");
    expect(id.jwksFetches(ISSUER)).toBe(0);
  });

  it("rejects malformed tokens: wrong shape, non-canonical base64url, non-JSON header", async () => {
    const id = identity();
    const good = signToken({ alg: "RS256", kid: "rsa-1" }, claims(), rsa);
    const [h, p, s] = good.split(".");
    await expectCode(id, `${h}.${p}`, "ERR_TOKEN_MALFORMED");
    await expectCode(id, `${good}.extra`, "ERR_TOKEN_MALFORMED");
    await expectCode(id, `${h}=.${p}.${s}`, "ERR_TOKEN_MALFORMED");
    await expectCode(id, `${Buffer.from("not json").toString("base64url")}.${p}.${s}`, "ERR_TOKEN_MALFORMED");
    await expectCode(id, `${Buffer.from("[1]").toString("base64url")}.${p}.${s}`, "ERR_TOKEN_MALFORMED");
    await expectCode(id, `${h}.${p}.${s}B`, "ERR_TOKEN_MALFORMED"); // impossible length
  });

  it("survives a flood of 1,000 tokens with random kids with at most one JWKS fetch per cooldown", async () => {
    const floodJwks = await startJwksServer([rsa.publicJwk]);
    try {
      let offset = 0;
      const id = identity({ jwks_uri: floodJwks.url, jwks_cooldown_seconds: 30 }, () => Date.now() + offset);
      const flood = Array.from({ length: 1000 }, () =>
        id.verify(signToken({ alg: "RS256", kid: randomUUID() }, claims(), attacker)),
      );
      const results = await Promise.allSettled(flood);
      expect(
        results.every((r) => r.status === "rejected" && r.reason.code === "ERR_JWKS_NO_MATCHING_KEY"),
      ).toBe(true);
      expect(floodJwks.requests).toBeLessThanOrEqual(1);
      expect(id.jwksFetches(ISSUER)).toBe(floodJwks.requests);
      const afterFlood = floodJwks.requests;

      offset += 31_000;
      await expectCode(
        id,
        signToken({ alg: "RS256", kid: randomUUID() }, claims(), attacker),
        "ERR_JWKS_NO_MATCHING_KEY",
      );
      expect(floodJwks.requests).toBe(afterFlood + 1);
      await expectCode(
        id,
        signToken({ alg: "RS256", kid: randomUUID() }, claims(), attacker),
        "ERR_JWKS_NO_MATCHING_KEY",
      );
      expect(floodJwks.requests).toBe(afterFlood + 1);
    } finally {
      await floodJwks.close();
    }
  });

  it("fails closed when the JWKS endpoint fails", async () => {
    const failing = await startJwksServer([rsa.publicJwk]);
    failing.failWith(500);
    try {
      const id = identity({ jwks_uri: failing.url });
      await expectCode(id, signToken({ alg: "RS256", kid: "rsa-1" }, claims(), rsa), "ERR_JWKS_UNAVAILABLE");
    } finally {
      await failing.close();
    }
  });
});
