/**
 * Project Wycheproof vectors (../shared/testdata/wycheproof, read in place):
 * - json_web_signature / json_web_key: compact JWS with keys and key sets, through our JWS layer
 *   (`verifyJws`: the header checks, JWK import and key selection `createIdentity` uses, and the signature
 *   primitive its fast-jwt verifier delegates to). Their payloads (`foo`, empty, binary) are not JWT claim
 *   sets, so the claim layer cannot see them; a last block signs real JWTs with the vectors' keys and runs
 *   them through `createIdentity` itself.
 * - raw signature files: fast-jwt's `verifySignature` with keys imported by our `importJwk`.
 */
import { createPrivateKey, type JsonWebKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { ALGORITHMS, type Algorithm, IssuerConfig } from "../../src/config/issuer.js";
import { isOnbehalfError, OnbehalfError } from "../../src/errors.js";
import { importJwk, isRocaModulus, jwkThumbprint } from "../../src/identity/jwk.js";
import { fastJwtVerifySignature, type JwsKeyMaterial, verifyJws } from "../../src/identity/jws.js";
import { createIdentity } from "../../src/identity/verify.js";
import { signToken } from "../support/oidc.js";
import { TESTDATA } from "../support/testdata.js";

const dir = join(TESTDATA, "wycheproof");

interface JwsVector {
  tcId: number;
  comment: string;
  jws: unknown;
  result: "valid" | "invalid" | "acceptable";
}
interface JwsGroup {
  comment: string;
  public?: Record<string, unknown> & { keys?: Record<string, unknown>[] };
  private?: Record<string, unknown> & { keys?: Record<string, unknown>[] };
  tests: JwsVector[];
}
interface SignatureVector {
  tcId: number;
  msg: string;
  sig: string;
  result: "valid" | "invalid" | "acceptable";
}
interface SignatureGroup {
  publicKey: Record<string, unknown>;
  publicKeyJwk?: Record<string, unknown>;
  keyJwk?: Record<string, unknown>;
  tests: SignatureVector[];
}

function load<G>(file: string): G[] {
  return (JSON.parse(readFileSync(resolve(dir, file), "utf8")) as { testGroups: G[] }).testGroups;
}

const ASYMMETRIC = ALGORITHMS.filter((a) => !a.startsWith("HS"));
const isAlgorithm = (a: unknown): a is Algorithm => (ALGORITHMS as readonly unknown[]).includes(a);
const PRIVATE = ["d", "p", "q", "dp", "dq", "qi"];
const publicOnly = (jwk: Record<string, unknown>) =>
  Object.fromEntries(Object.entries(jwk).filter(([k]) => !PRIVATE.includes(k)));

type Outcome = { ok: true } | { ok: false; code: string };
function headerOf(token: unknown): Record<string, unknown> {
  try {
    return JSON.parse(Buffer.from(String(token).split(".")[0] ?? "", "base64url").toString("utf8"));
  } catch {
    return {};
  }
}

/** A JWK from Wycheproof's `publicKey` fields, for the ECDSA groups that ship no JWK. */
function ecJwk(publicKey: Record<string, unknown>): Record<string, unknown> {
  const size = publicKey["curve"] === "secp384r1" ? 48 : 32;
  const coordinate = (hex: unknown) => {
    const bytes = Buffer.from(String(hex).replace(/^(00)+/, ""), "hex");
    return Buffer.concat([Buffer.alloc(size - bytes.length), bytes]).toString("base64url");
  };
  const crv = publicKey["curve"] === "secp384r1" ? "P-384" : "P-256";
  return { kty: "EC", crv, x: coordinate(publicKey["wx"]), y: coordinate(publicKey["wy"]) };
}

function outcome(token: unknown, material: JwsKeyMaterial, algorithms: readonly Algorithm[]): Outcome {
  try {
    verifyJws(typeof token === "string" ? token : JSON.stringify(token), material, algorithms);
    return { ok: true };
  } catch (e) {
    if (!(e instanceof OnbehalfError)) throw new Error(`a raw error escaped: ${String(e)}`);
    return { ok: false, code: e.code };
  }
}

describe("Wycheproof json_web_signature_test.json through the JWS layer", () => {
  const groups = load<JwsGroup>("json_web_signature_test.json");
  const all = groups.flatMap((g) => g.tests.map((t) => ({ g, t })));
  /** Vectors this copy marks invalid although they are byte-identical to a valid vector of the same group. */
  const identicalToValid = all.filter(
    ({ g, t }) => t.result === "invalid" && g.tests.some((v) => v.result === "valid" && v.jws === t.jws),
  );
  /**
   * Valid vectors whose key says `alg` X while the token says Y (RFC 7520 figures with keys Wycheproof
   * labelled PS256 and ES521): we refuse a key for any alg but its own, by design.
   */
  const keyAlgMismatch = all.filter(
    ({ g, t }) =>
      t.result === "valid" && g.public?.["alg"] !== undefined && g.public["alg"] !== headerOf(t.jws)["alg"],
  );
  /** Vectors marked valid that contain characters outside base64url: RFC 7515 §2 / RFC 4648 §3.3 reject them. */
  const nonBase64Url = all.filter(
    ({ t }) => t.result === "valid" && typeof t.jws === "string" && !/^[A-Za-z0-9_.-]*$/.test(t.jws),
  );

  it("has the expected shape (so a silently empty file cannot pass)", () => {
    expect(groups.length).toBeGreaterThan(20);
    expect(all.length).toBe(401);
    expect(identicalToValid.map(({ t }) => t.tcId)).toEqual([367, 370]);
    expect(nonBase64Url.map(({ t }) => t.tcId)).toEqual([372, 373]);
    expect(keyAlgMismatch.map(({ t }) => t.tcId)).toEqual([346, 347, 350, 351]);
  });

  const asymmetric = groups.filter((g) => g.public !== undefined);
  it("with each group's public key and alg: rejects every invalid vector and accepts every valid one", () => {
    let accepted = 0;
    let rejected = 0;
    for (const g of asymmetric) {
      const alg = g.public?.["alg"];
      const material = { jwks: { keys: [g.public] } };
      const algorithms = isAlgorithm(alg) ? [alg] : ASYMMETRIC;
      for (const t of g.tests) {
        const r = outcome(t.jws, material, algorithms);
        if (keyAlgMismatch.some((x) => x.t === t)) {
          // Refused for the key's alg (PS256 key, PS384 token) or an alg that does not exist (ES521)...
          expect(r, `tcId ${t.tcId}`).toMatchObject({ ok: false });
          expect(["ERR_TOKEN_ALG_NOT_ALLOWED", "ERR_JWKS_NO_MATCHING_KEY"]).toContain(
            (r as { code: string }).code,
          );
          // ...while the signature itself is good: without the key's alg label the same vector verifies.
          const unlabelled = { jwks: { keys: [{ ...g.public, alg: undefined }] } };
          expect(outcome(t.jws, unlabelled, ASYMMETRIC), `tcId ${t.tcId} without key alg`).toEqual({
            ok: true,
          });
          accepted++;
        } else if (t.result === "invalid") {
          expect(r, `tcId ${t.tcId} ${t.comment} (${g.comment})`).toMatchObject({ ok: false });
          rejected++;
        } else {
          expect(r, `tcId ${t.tcId} ${t.comment} (${g.comment})`).toEqual({ ok: true });
          accepted++;
        }
      }
    }
    expect(accepted).toBeGreaterThanOrEqual(30); // RS256/384/512, PS256/384/512, ES256, ES512 (P-521)
    expect(rejected).toBeGreaterThanOrEqual(300);
  });

  it("rejects the ES256 special cases (r or s = 0, 1, n−1, n; overflows; wrong lengths) as bad signatures", () => {
    const g = groups.find((x) => x.comment === "SpecialCaseEs256");
    expect(g).toBeDefined();
    for (const t of g?.tests ?? []) {
      const r = outcome(t.jws, { jwks: { keys: [g?.public] } }, ["ES256"]);
      if (t.result === "invalid")
        expect(r, `tcId ${t.tcId} ${t.comment}`).toEqual({ ok: false, code: "ERR_TOKEN_SIGNATURE_INVALID" });
    }
  });

  const hmac = groups.filter((g) => g.public === undefined && g.private?.["kty"] === "oct");
  const secretOf = (g: JwsGroup) => Buffer.from(String(g.private?.["k"]), "base64url");

  it("rejects every HS256 vector unless HS256 is allowed and the secret is configured", () => {
    for (const g of hmac) {
      for (const t of g.tests) {
        const notListed = outcome(t.jws, { secret: secretOf(g) }, ["RS256", "ES256"]);
        const noSecret = outcome(t.jws, { jwks: { keys: [g.private] } }, ["HS256"]);
        for (const r of [notListed, noSecret]) {
          expect(r, `tcId ${t.tcId}`).toMatchObject({ ok: false });
          expect(["ERR_TOKEN_ALG_NOT_ALLOWED", "ERR_TOKEN_MALFORMED"]).toContain(
            (r as { code: string }).code,
          );
        }
      }
    }
  });

  it("with HS256 and the secret: rejects every invalid vector and accepts every valid one (strict base64url aside)", () => {
    let accepted = 0;
    for (const g of hmac) {
      for (const t of g.tests) {
        const r = outcome(t.jws, { secret: secretOf(g) }, ["HS256"]);
        if (identicalToValid.some((x) => x.t === t)) {
          // 367 and 370 equal tcId 357 byte for byte: no verifier can reject them and accept 357.
          expect(r).toEqual({ ok: true });
        } else if (nonBase64Url.some((x) => x.t === t)) {
          expect(r, `tcId ${t.tcId}`).toEqual({ ok: false, code: "ERR_TOKEN_MALFORMED" });
        } else if (t.result === "invalid") {
          expect(r, `tcId ${t.tcId} ${t.comment}`).toMatchObject({ ok: false });
        } else {
          expect(r, `tcId ${t.tcId} ${t.comment}`).toEqual({ ok: true });
          accepted++;
        }
      }
    }
    expect(accepted).toBeGreaterThanOrEqual(8);
  });
});

describe("Wycheproof json_web_key_test.json: key sets and key validation", () => {
  const groups = load<JwsGroup>("json_web_key_test.json");

  it("accepts the valid asymmetric vector and rejects every invalid one, keys taken from the published set", () => {
    let accepted = 0;
    for (const g of groups) {
      const keys = (g.public?.keys ?? g.private?.keys ?? []).map(publicOnly);
      for (const t of g.tests) {
        const r = outcome(t.jws, { jwks: { keys } }, ASYMMETRIC);
        const alg = headerOf(t.jws)["alg"];
        if (t.result === "valid" && !String(alg).startsWith("HS")) {
          expect(r, `tcId ${t.tcId} ${g.comment}`).toEqual({ ok: true });
          accepted++;
        } else {
          // invalid vectors, and HMAC ones: symmetric keys are never taken from a key set
          expect(r, `tcId ${t.tcId} ${g.comment}`).toMatchObject({ ok: false });
        }
      }
    }
    expect(accepted).toBe(1);
  });

  it("verifies HMAC vectors only with a configured secret at least as long as the hash", () => {
    const results: Record<string, Outcome> = {};
    for (const g of groups) {
      const keys = g.private?.keys ?? [];
      const only = keys[0];
      if (keys.length !== 1 || only?.["kty"] !== "oct" || !String(only["alg"]).startsWith("HS")) continue;
      const alg = only["alg"] as Algorithm;
      for (const t of g.tests) {
        results[`${t.tcId}:${t.result}`] = outcome(
          t.jws,
          { secret: Buffer.from(String(only["k"]), "base64url") },
          [alg],
        );
      }
    }
    const valid = Object.entries(results).filter(([k]) => k.endsWith(":valid"));
    const invalid = Object.entries(results).filter(([k]) => k.endsWith(":invalid"));
    expect(valid.length).toBe(3); // long keys for HS256/384/512
    for (const [, r] of valid) expect(r).toEqual({ ok: true });
    expect(invalid.length).toBe(6); // short keys and empty keys
    for (const [, r] of invalid) expect(r).toEqual({ ok: false, code: "ERR_CONFIG_INVALID" });
  });

  it("refuses to import the weak and mismatched keys, each with a reason", () => {
    const reasons: Record<string, string> = {};
    for (const g of groups) {
      for (const jwk of g.public?.keys ?? []) {
        const r = importJwk(jwk);
        reasons[g.comment] = "skipped" in r ? r.skipped : "imported";
      }
    }
    expect(reasons).toMatchObject({
      jws_rsa_roca_key: expect.stringContaining("ROCA"),
      keysize_too_small: expect.stringContaining("1024 bits"),
      exponentOne: expect.stringContaining("exponent"),
      wrong_algorithm: expect.stringContaining("ES521"),
      invalid_algorithm: expect.stringContaining("ES224"),
      invalid_use: expect.stringContaining("use"),
      invalid_point: expect.stringContaining("cannot be imported"),
      wrong_curve: expect.stringContaining('"ES256" does not fit a EC key on P-384'),
      wrong_kty: expect.stringContaining("missing"),
    });
    expect(reasons["rs256"]).toBeDefined();
  });

  it("flags the ROCA modulus and not an ordinary one, and computes RFC 7638 / RFC 8037 thumbprints", () => {
    const roca = groups.find((g) => g.comment === "jws_rsa_roca_key")?.public?.keys?.[0];
    expect(isRocaModulus(BigInt(`0x${Buffer.from(String(roca?.["n"]), "base64url").toString("hex")}`))).toBe(
      true,
    );
    const normal = groups.find((g) => g.comment === "rs256")?.public?.keys?.[0];
    expect(
      isRocaModulus(BigInt(`0x${Buffer.from(String(normal?.["n"]), "base64url").toString("hex")}`)),
    ).toBe(false);
    // RFC 7638 §3.1 example and RFC 8037 appendix A.3
    expect(
      jwkThumbprint({
        kty: "RSA",
        e: "AQAB",
        n: "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
      }),
    ).toBe("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    expect(
      jwkThumbprint({ kty: "OKP", crv: "Ed25519", x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" }),
    ).toBe("kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
  });
});

describe("Wycheproof raw signature vectors through fast-jwt's signature primitive with our key import", () => {
  const files: [string, Algorithm][] = [
    ["ecdsa_secp256r1_sha256_p1363_test.json", "ES256"],
    ["ecdsa_secp384r1_sha384_p1363_test.json", "ES384"],
    ["rsa_signature_2048_sha256_test.json", "RS256"],
    ["rsa_pss_2048_sha256_mgf1_32_test.json", "PS256"],
    ["ed25519_test.json", "EdDSA"],
  ];
  it.each(files)("%s (%s): rejects every invalid signature and accepts every valid one", (file, alg) => {
    let valid = 0;
    let invalid = 0;
    for (const g of load<SignatureGroup>(file)) {
      const imported = importJwk(g.publicKeyJwk ?? g.keyJwk ?? ecJwk(g.publicKey));
      if (!("key" in imported)) throw new Error(`our import refused the vector key: ${imported.skipped}`);
      expect(imported.key.algorithms).toContain(alg);
      for (const t of g.tests) {
        let ok: boolean;
        try {
          ok = fastJwtVerifySignature(
            alg,
            imported.key.keyObject,
            Buffer.from(t.msg, "hex"),
            Buffer.from(t.sig, "hex").toString("base64"),
          );
        } catch {
          ok = false;
        }
        if (t.result === "valid") {
          expect(ok, `tcId ${t.tcId}`).toBe(true);
          valid++;
        } else if (t.result === "invalid") {
          expect(ok, `tcId ${t.tcId}`).toBe(false);
          invalid++;
        }
      }
    }
    expect(valid).toBeGreaterThan(0);
    expect(invalid).toBeGreaterThan(0);
  });
});

describe("real JWTs signed with the Wycheproof keys, through createIdentity (fast-jwt's verifier)", () => {
  const groups = load<JwsGroup>("json_web_signature_test.json").filter(
    (g) => g.public !== undefined && g.private !== undefined && g.private["kty"] !== "oct",
  );
  /** One key per token algorithm the vectors use (the key's own `alg` label is dropped: see above). */
  const byAlg = new Map<Algorithm, JwsGroup>();
  for (const g of groups) {
    const alg = headerOf(g.tests.find((t) => t.result === "valid")?.jws)["alg"];
    if (isAlgorithm(alg) && !byAlg.has(alg)) byAlg.set(alg, g);
  }

  it.each([...byAlg.keys()])(
    "verifies a %s JWT and rejects it once its signature is altered",
    async (alg) => {
      const g = byAlg.get(alg) as JwsGroup;
      const privateKey = createPrivateKey({
        key: { ...g.private, alg: undefined } as JsonWebKey,
        format: "jwk",
      });
      const issuer = "https://wycheproof.test/";
      const now = Math.floor(Date.now() / 1000);
      const identity = createIdentity({
        issuers: [
          IssuerConfig.parse({
            issuer,
            audience: "aud",
            jwks: { keys: [{ ...g.public, alg: undefined }] },
            algorithms: [alg],
          }),
        ],
      });
      const kid = g.public?.["kid"];
      const token = signToken(
        { alg, ...(kid ? { kid } : {}) },
        { iss: issuer, aud: "aud", sub: "w", exp: now + 60 },
        { privateKey },
      );
      await expect(identity.verify(token)).resolves.toMatchObject({ sub: "w" });
      const altered = `${token.slice(0, -6)}${token.slice(-6, -5) === "A" ? "B" : "A"}${token.slice(-5)}`;
      const error = await identity.verify(altered).catch((e: unknown) => e);
      expect(isOnbehalfError(error)).toBe(true);
      identity.close();
    },
  );

  it("covers the RSA, PSS and ECDSA families", () => {
    expect([...byAlg.keys()].sort()).toEqual([
      "ES256",
      "ES512",
      "PS256",
      "PS384",
      "PS512",
      "RS256",
      "RS384",
      "RS512",
    ]);
  });
});
