/** OIDC discovery, the RFC 8414 fallback, fetch limits, and the issuer config errors caught up front. */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { IssuerConfig } from "../../src/config/issuer.js";
import type { ConfigInput } from "../../src/config/schema.js";
import { discover, discoveryUrls } from "../../src/identity/discovery.js";
import { createIdentity } from "../../src/identity/verify.js";
import { generateTestKey, signToken, type TestKey } from "../support/oidc.js";

type Handler = (req: IncomingMessage, res: ServerResponse, base: string) => void;
type IssuerInput = NonNullable<ConfigInput["issuers"]>[number];

const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

/** A local IdP whose routes the test writes; returns its base URL and the paths requested. */
async function idp(handler: Handler): Promise<{ base: string; paths: string[] }> {
  const paths: string[] = [];
  let base = "";
  const server = createServer((req, res) => {
    paths.push(req.url ?? "");
    handler(req, res, base);
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { base, paths };
}

function json(res: ServerResponse, body: unknown, status = 200): void {
  res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
}

function tokenFor(issuer: string, key: TestKey): string {
  const now = Math.floor(Date.now() / 1000);
  return signToken(
    { alg: key.alg, kid: key.kid },
    { iss: issuer, aud: "api", sub: "alice", exp: now + 60 },
    key,
  );
}

function identity(input: Omit<IssuerInput, "audience">) {
  return createIdentity({ issuers: [IssuerConfig.parse({ audience: "api", ...input })] });
}

describe("discovery URLs", () => {
  it("appends the OIDC path after removing trailing slashes, and inserts the RFC 8414 one before the path", () => {
    expect(discoveryUrls("https://tenant.eu.auth0.com/")).toEqual([
      "https://tenant.eu.auth0.com/.well-known/openid-configuration",
      "https://tenant.eu.auth0.com/.well-known/oauth-authorization-server",
    ]);
    expect(discoveryUrls("https://kc.example.com/realms/acme/")).toEqual([
      "https://kc.example.com/realms/acme/.well-known/openid-configuration",
      "https://kc.example.com/.well-known/oauth-authorization-server/realms/acme",
    ]);
  });
});

describe("discovery against a local IdP", () => {
  it("finds jwks_uri through /.well-known/openid-configuration", async () => {
    const key = generateTestKey("ES256");
    const server = await idp((req, res, base) => {
      if (req.url === "/tenant/.well-known/openid-configuration")
        json(res, { issuer: `${base}/tenant/`, jwks_uri: `${base}/keys` });
      else if (req.url === "/keys") json(res, { keys: [key.publicJwk] });
      else json(res, {}, 404);
    });
    const issuer = `${server.base}/tenant/`;
    const id = identity({ issuer });
    await expect(id.verify(tokenFor(issuer, key))).resolves.toMatchObject({ sub: "alice" });
    expect(server.paths).toEqual(["/tenant/.well-known/openid-configuration", "/keys"]);
  });

  it("falls back to RFC 8414 metadata when there is no OIDC document", async () => {
    const key = generateTestKey("EdDSA");
    const server = await idp((req, res, base) => {
      if (req.url === "/.well-known/oauth-authorization-server/as")
        json(res, { issuer: `${base}/as`, jwks_uri: `${base}/jwks` });
      else if (req.url === "/jwks") json(res, { keys: [key.publicJwk] });
      else json(res, { error: "not found" }, 404);
    });
    const issuer = `${server.base}/as`;
    await expect(identity({ issuer }).verify(tokenFor(issuer, key))).resolves.toMatchObject({ sub: "alice" });
    expect(server.paths).toEqual([
      "/as/.well-known/openid-configuration",
      "/.well-known/oauth-authorization-server/as",
      "/jwks",
    ]);
  });

  it("refuses metadata that names another issuer (mix-up), and never fetches its keys", async () => {
    const key = generateTestKey("ES256");
    const server = await idp((req, res, base) => {
      if (req.url?.includes("openid-configuration"))
        json(res, { issuer: `${base}/`, jwks_uri: `${base}/jwks` });
      else json(res, { keys: [key.publicJwk] });
    });
    const issuer = server.base; // configured without the trailing slash the IdP uses
    const error = await identity({ issuer })
      .verify(tokenFor(issuer, key))
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "ERR_DISCOVERY_FAILED", status: 503 });
    expect((error as Error).message).toContain("trailing slash");
    expect(server.paths.some((p) => p === "/jwks")).toBe(false);
  });

  it("refuses a discovered jwks_uri over plain http to a non-loopback host", async () => {
    const server = await idp((_req, res, base) =>
      json(res, { issuer: base, jwks_uri: "http://keys.example.com/jwks" }),
    );
    await expect(discover(server.base, { fetch, allowInsecureHttp: false })).rejects.toMatchObject({
      code: "ERR_DISCOVERY_FAILED",
      message: expect.stringContaining("not https"),
    });
  });

  it("fails discovery with both URLs in the message when neither answers", async () => {
    const server = await idp((_req, res) => json(res, {}, 500));
    const error = await discover(server.base, { fetch, allowInsecureHttp: false }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "ERR_DISCOVERY_FAILED" });
    expect((error as Error).message).toMatch(/openid-configuration[\s\S]*oauth-authorization-server/);
  });
});

describe("JWKS fetch limits", () => {
  it("refuses a JWKS over 1 MiB, a body that is not JSON, a JSON without keys, and a redirect", async () => {
    const key = generateTestKey("ES256");
    const server = await idp((req, res, base) => {
      if (req.url === "/huge") {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(`{"keys":[],"pad":"${"x".repeat(1_100_000)}"}`);
      } else if (req.url === "/huge-chunked") {
        res.writeHead(200, { "content-type": "application/json" });
        for (let i = 0; i < 20; i++) res.write(`${i === 0 ? '{"pad":"' : ""}${"x".repeat(65_536)}`);
        res.end('"}');
      } else if (req.url === "/text") res.writeHead(200).end("<html>");
      else if (req.url === "/nokeys") json(res, { jwks: [] });
      else if (req.url === "/redirect") res.writeHead(302, { location: `${base}/keys` }).end();
      else json(res, { keys: [key.publicJwk] });
    });
    for (const [path, reason] of [
      ["/huge", "limit"],
      ["/huge-chunked", "limit"],
      ["/text", "not JSON"],
      ["/nokeys", "not a JWK Set"],
      ["/redirect", "/redirect"],
    ] as const) {
      const issuer = "https://idp.limits.test/";
      const error = await identity({ issuer, jwks_uri: `${server.base}${path}` })
        .verify(tokenFor(issuer, key))
        .catch((e: unknown) => e);
      expect(error, path).toMatchObject({
        code: "ERR_JWKS_UNAVAILABLE",
        message: expect.stringContaining(reason),
      });
    }
  });

  it("shares one in-flight JWKS request among concurrent first verifications", async () => {
    const key = generateTestKey("ES256");
    const server = await idp((_req, res) => setTimeout(() => json(res, { keys: [key.publicJwk] }), 50));
    const issuer = "https://idp.flight.test/";
    const id = identity({ issuer, jwks_uri: `${server.base}/jwks` });
    const results = await Promise.all(Array.from({ length: 50 }, () => id.verify(tokenFor(issuer, key))));
    expect(results.every((p) => p.sub === "alice")).toBe(true);
    expect(server.paths).toEqual(["/jwks"]);
    expect(id.jwksFetches(issuer)).toBe(1);
  });

  it("after a failed fetch, fails fast for a short backoff instead of hammering the IdP", async () => {
    const key = generateTestKey("ES256");
    const server = await idp((_req, res) => json(res, {}, 503));
    const issuer = "https://idp.down.test/";
    const id = identity({ issuer, jwks_uri: `${server.base}/jwks`, jwks_cooldown_seconds: 30 });
    for (let i = 0; i < 5; i++) {
      await expect(id.verify(tokenFor(issuer, key))).rejects.toMatchObject({ code: "ERR_JWKS_UNAVAILABLE" });
    }
    expect(server.paths).toEqual(["/jwks"]);
  });
});

describe("issuer configuration errors, reported by createIdentity", () => {
  const key = generateTestKey("EdDSA");
  const cases: [string, Omit<IssuerInput, "audience">, string][] = [
    ["plain http to a non-loopback issuer", { issuer: "http://idp.example.com" }, "https"],
    [
      "both inline jwks and jwks_uri",
      { issuer: "https://a.test", jwks: { keys: [key.publicJwk] }, jwks_uri: "https://a.test/jwks" },
      "not both",
    ],
    ["a non-URL issuer without keys", { issuer: "urn:example:idp" }, "jwks_uri or inline jwks"],
    [
      "an HS256 secret shorter than 32 bytes",
      { issuer: "https://a.test", algorithms: ["HS256"], secret: "short" },
      "at least 32",
    ],
    [
      "only HS algorithms and no secret",
      { issuer: "https://a.test", algorithms: ["HS256"] },
      "no usable algorithm",
    ],
    [
      "inline keys that are all unusable",
      { issuer: "urn:x", jwks: { keys: [{ kty: "oct", k: "AAAA" }] } },
      "none of the inline jwks keys",
    ],
  ];
  it.each(cases)("refuses %s", (_name, input, message) => {
    expect(() => identity(input)).toThrow(
      expect.objectContaining({ code: "ERR_CONFIG_INVALID", message: expect.stringContaining(message) }),
    );
  });

  it("refuses the same issuer twice, and allows plain http on loopback or with allow_insecure_http", () => {
    const config = IssuerConfig.parse({ issuer: "https://a.test", audience: "api" });
    expect(() => createIdentity({ issuers: [config, config] })).toThrow(
      expect.objectContaining({ code: "ERR_CONFIG_INVALID" }),
    );
    expect(() => identity({ issuer: "http://localhost:8080" })).not.toThrow();
    expect(() => identity({ issuer: "http://idp.lan", allow_insecure_http: true })).not.toThrow();
  });
});
