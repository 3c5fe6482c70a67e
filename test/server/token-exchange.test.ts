/** RFC 8693 token exchange and delegation tokens, end to end over HTTP. */
import { createPublicKey, verify } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { OnbehalfServer } from "../../src/server/app.js";
import { ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE } from "../../src/server/token-exchange.js";
import { generateTestKey, type OidcProviderHandle, signToken, startOidcProvider } from "../support/oidc.js";
import { ADMIN, call, startTestServer, userToken } from "../support/server.js";

let idp: OidcProviderHandle;
let server: OnbehalfServer;
let alice: string;

beforeAll(async () => {
  idp = await startOidcProvider();
  server = await startTestServer(idp);
  alice = await userToken(idp, "alice", "customers:read orders:write");
});
afterAll(async () => {
  await server?.close();
  await idp?.close();
});

const exchange = (params: Record<string, string>, form = false) =>
  form
    ? call(server.url, "POST", "/v1/token", {
        raw: new URLSearchParams(params).toString(),
        contentType: "application/x-www-form-urlencoded",
      })
    : call(server.url, "POST", "/v1/token", { body: params });
const claims = (jwt: string) => JSON.parse(Buffer.from(jwt.split(".")[1]!, "base64url").toString());

describe("POST /v1/token", () => {
  it("issues a delegation token signed by the server, verifiable at its JWKS, with the chain in nested act claims", async () => {
    const r = await exchange(
      {
        grant_type: TOKEN_EXCHANGE,
        subject_token: alice,
        subject_token_type: ACCESS_TOKEN_TYPE,
        actor: "planner",
        scope: "customers:read orders:write",
      },
      true,
    );
    expect(r.status).toBe(200);
    expect(r.headers.get("cache-control")).toBe("no-store");
    expect(r.body).toMatchObject({
      issued_token_type: "urn:ietf:params:oauth:token-type:access_token",
      token_type: "Bearer",
      scope: "customers:read orders:write",
    });
    const c = claims(r.body.access_token);
    expect(c).toMatchObject({
      iss: server.issuer,
      aud: server.issuer,
      sub: "alice",
      tenant: "acme",
      tier: "subagent",
      act: { sub: "planner" },
    });
    expect(c.exp - c.iat).toBeLessThanOrEqual(600);
    const jwks = (await call(server.url, "GET", "/.well-known/jwks.json")).body.keys[0];
    const [h, p, s] = r.body.access_token.split(".");
    expect(
      verify(
        null,
        Buffer.from(`${h}.${p}`),
        createPublicKey({ key: jwks, format: "jwk" }),
        Buffer.from(s, "base64url"),
      ),
    ).toBe(true);
  });

  it("keeps the chain in order over three hops, each only narrowing", async () => {
    const hop1 = (
      await exchange({
        grant_type: TOKEN_EXCHANGE,
        subject_token: alice,
        subject_token_type: ACCESS_TOKEN_TYPE,
        actor: "planner",
      })
    ).body;
    const hop2 = (
      await exchange({
        grant_type: TOKEN_EXCHANGE,
        subject_token: hop1.access_token,
        subject_token_type: ACCESS_TOKEN_TYPE,
        actor: "researcher",
        scope: "customers:read orders:write",
      })
    ).body;
    const hop3 = (
      await exchange({
        grant_type: TOKEN_EXCHANGE,
        subject_token: hop2.access_token,
        subject_token_type: ACCESS_TOKEN_TYPE,
        actor: "mailer",
        scope: "customers:read",
      })
    ).body;
    expect(claims(hop3.access_token).act).toEqual({
      sub: "mailer",
      act: { sub: "researcher", act: { sub: "planner" } },
    });
    expect(hop3.scope).toBe("customers:read");
    // the chain comes from the signature, not from the body
    const r = await call(server.url, "POST", "/v1/check", {
      token: hop3.access_token,
      body: { tool: "issue_refund", args: { amount: 5 }, agent: { name: "someone-else" } },
    });
    expect(r.body).toMatchObject({
      decision: "deny",
      reason_code: "missing_scope",
      chain: ["planner", "researcher", "mailer"],
    });
    const ok = await call(server.url, "POST", "/v1/check", {
      token: hop3.access_token,
      body: { tool: "get_customer", args: {}, agent: { name: "x" } },
    });
    expect(ok.body).toMatchObject({ decision: "allow", chain: ["planner", "researcher", "mailer"] });
    await server.governor.flush();
    const denied = (
      await call(server.url, "GET", "/v1/audit?user=alice&decision=deny&tool=issue_refund", { token: ADMIN })
    ).body.records[0];
    expect(denied).toMatchObject({
      chain: ["planner", "researcher", "mailer"],
      agent: "mailer",
      tier: "subagent",
    });
  });

  it("starts the chain with subject_actor, the agent holding a user's own token, in one exchange", async () => {
    const r = await exchange(
      {
        grant_type: TOKEN_EXCHANGE,
        subject_token: alice,
        subject_token_type: ACCESS_TOKEN_TYPE,
        subject_actor: "planner",
        actor: "researcher-sa",
        scope: "customers:read",
      },
      true,
    );
    expect(r.status).toBe(200);
    expect(r.body.scope).toBe("customers:read");
    expect(claims(r.body.access_token).act).toEqual({ sub: "researcher-sa", act: { sub: "planner" } });
    const check = await call(server.url, "POST", "/v1/check", {
      token: r.body.access_token,
      body: { tool: "get_customer", args: {}, agent: { name: "x" } },
    });
    expect(check.body).toMatchObject({ decision: "allow", chain: ["planner", "researcher-sa"] });
    await server.governor.flush();
    const records = (
      await call(server.url, "GET", "/v1/audit?user=alice&limit=200", { token: ADMIN })
    ).body.records.filter(
      (x: { kind: string; agent: string }) => x.kind === "delegation" && x.agent === "researcher-sa",
    );
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({
      chain: ["planner", "researcher-sa"],
      agent: "researcher-sa",
      tier: "subagent",
      args: { requested: ["customers:read"], granted: ["customers:read"], dropped: [] },
    });
    // the same agent twice is one hop, not a chain of two
    const same = await exchange({
      grant_type: TOKEN_EXCHANGE,
      subject_token: alice,
      subject_token_type: ACCESS_TOKEN_TYPE,
      subject_actor: "planner",
      actor: "planner",
    });
    expect(claims(same.body.access_token).act).toEqual({ sub: "planner" });
  });

  it("refuses subject_actor with a delegation subject, and an invalid subject_actor", async () => {
    const hop = (
      await exchange({
        grant_type: TOKEN_EXCHANGE,
        subject_token: alice,
        subject_token_type: ACCESS_TOKEN_TYPE,
        actor: "planner",
      })
    ).body;
    const r = await exchange({
      grant_type: TOKEN_EXCHANGE,
      subject_token: hop.access_token,
      subject_token_type: ACCESS_TOKEN_TYPE,
      subject_actor: "impostor",
      actor: "researcher",
    });
    expect(r.status).toBe(400);
    expect(r.body.error_description).toMatch(
      /subject_actor and subject_tier are only for a user's own token/,
    );
    for (const bad of ["bad name", "", "x".repeat(201), "tab\there"]) {
      const invalid = await exchange(
        {
          grant_type: TOKEN_EXCHANGE,
          subject_token: alice,
          subject_token_type: ACCESS_TOKEN_TYPE,
          subject_actor: bad,
          actor: "researcher",
        },
        true,
      );
      expect(invalid.status, JSON.stringify(bad)).toBe(400);
    }
  });

  it("signs every hop's tier: a delegation may name another tier, and keeps the trace of its run", async () => {
    const first = (
      await exchange({
        grant_type: TOKEN_EXCHANGE,
        subject_token: alice,
        subject_token_type: ACCESS_TOKEN_TYPE,
        actor: "nightly",
        tier: "background",
      })
    ).body;
    expect(first.trace_id).toMatch(/^[0-9a-f]{32}$/);
    expect(claims(first.access_token)).toMatchObject({
      tier: "background",
      tiers: ["background"],
      trace_id: first.trace_id,
    });
    const next = (
      await exchange({
        grant_type: TOKEN_EXCHANGE,
        subject_token: first.access_token,
        subject_token_type: ACCESS_TOKEN_TYPE,
        actor: "helper",
        tier: "interactive",
      })
    ).body;
    // The hop names its own tier; the chain keeps the one before (a call is decided under both: tiers.test.ts).
    expect(claims(next.access_token)).toMatchObject({
      tier: "interactive",
      tiers: ["background", "interactive"],
      trace_id: first.trace_id,
    });
    const plain = (
      await exchange({
        grant_type: TOKEN_EXCHANGE,
        subject_token: first.access_token,
        subject_token_type: ACCESS_TOKEN_TYPE,
        actor: "helper",
      })
    ).body;
    expect(claims(plain.access_token).tiers).toEqual(["background", "subagent"]);
  });

  it("attenuates a widening request instead of refusing it, and says what was dropped", async () => {
    const narrow = (
      await exchange({
        grant_type: TOKEN_EXCHANGE,
        subject_token: alice,
        subject_token_type: ACCESS_TOKEN_TYPE,
        actor: "a",
        scope: "customers:read",
      })
    ).body;
    const wide = await exchange({
      grant_type: TOKEN_EXCHANGE,
      subject_token: narrow.access_token,
      subject_token_type: ACCESS_TOKEN_TYPE,
      actor: "b",
      scope: "customers:read orders:write admin",
    });
    expect(wide.status).toBe(200);
    expect(wide.body.scope).toBe("customers:read");
    await server.governor.flush();
    const record = (
      await call(server.url, "GET", "/v1/audit?user=alice&limit=50", { token: ADMIN })
    ).body.records.find((x: { kind: string; agent: string }) => x.kind === "delegation" && x.agent === "b");
    expect(record.args).toEqual({
      requested: ["customers:read", "orders:write", "admin"],
      granted: ["customers:read"],
      dropped: ["orders:write", "admin"],
      // nobody authenticated as a client: no hop is vouched for
      client_id: null,
      client_authenticated: false,
      clients: [null, null],
    });
    expect(record.reason).toContain("not granted");
  });

  it("never outlives the subject token", async () => {
    const shortLived = await idp.getToken({
      scope: "customers:read",
      claims: { sub: "alice", tenant: "acme", exp: Math.floor(Date.now() / 1000) + 60 },
    });
    const r = (
      await exchange({
        grant_type: TOKEN_EXCHANGE,
        subject_token: shortLived,
        subject_token_type: ACCESS_TOKEN_TYPE,
        actor: "a",
      })
    ).body;
    expect(r.expires_in).toBeLessThanOrEqual(60);
    expect(claims(r.access_token).exp).toBe(claims(shortLived).exp);
  });

  it("ignores act claims in an identity provider's token, and rejects a client-forged delegation token", async () => {
    const withAct = await userToken(idp, "alice", "customers:read", { act: { sub: "trusted-admin-agent" } });
    const r = await call(server.url, "POST", "/v1/check", {
      token: withAct,
      body: { tool: "get_customer", args: {}, agent: { name: "bot" } },
    });
    expect(r.body.chain).toEqual(["bot"]);
    const attacker = generateTestKey("EdDSA");
    const now = Math.floor(Date.now() / 1000);
    const forged = signToken(
      { alg: "EdDSA", kid: attacker.kid },
      {
        iss: server.issuer,
        aud: server.issuer,
        sub: "alice",
        tenant: "acme",
        scope: "customers:read",
        tier: "subagent",
        act: { sub: "x" },
        iat: now,
        exp: now + 300,
      },
      attacker,
    );
    expect(
      (
        await call(server.url, "POST", "/v1/check", {
          token: forged,
          body: { tool: "get_customer", agent: { name: "x" } },
        })
      ).status,
    ).toBe(401);
    expect(
      (
        await exchange({
          grant_type: TOKEN_EXCHANGE,
          subject_token: forged,
          subject_token_type: ACCESS_TOKEN_TYPE,
          actor: "y",
        })
      ).body,
    ).toMatchObject({
      error: "invalid_request",
      error_description: expect.stringMatching(/^the subject_token is not acceptable/),
    });
  });

  it("refuses bad requests clearly, as RFC 6749 errors", async () => {
    const refusal = async (params: Record<string, string>) => {
      const r = await exchange(params, true);
      expect(r.headers.get("cache-control")).toBe("no-store");
      return { status: r.status, ...r.body };
    };
    const base = { grant_type: TOKEN_EXCHANGE, subject_token: alice, subject_token_type: ACCESS_TOKEN_TYPE };
    expect(await refusal({ ...base, grant_type: "password", actor: "a" })).toMatchObject({
      status: 400,
      error: "unsupported_grant_type",
      error_description: expect.stringMatching(/unsupported grant_type password/),
    });
    expect(await refusal(base)).toMatchObject({ status: 400, error: "invalid_request" });
    expect((await refusal(base)).error_description).toMatch(/give actor/);
    expect(await refusal({ ...base, actor: "bad name" })).toMatchObject({
      status: 400,
      error: "invalid_request",
      error_description: expect.stringMatching(/^invalid request: actor: an agent name has no spaces/),
    });
    // RFC 8693: subject_token_type is required with subject_token, and actor_token_type with actor_token
    const { subject_token_type: _t, ...untyped } = base;
    expect(await refusal({ ...untyped, actor: "a" })).toMatchObject({
      status: 400,
      error: "invalid_request",
      error_description: expect.stringMatching(/subject_token_type is required/),
    });
    expect(await refusal({ ...base, subject_token_type: "urn:x:saml", actor: "a" })).toMatchObject({
      error: "invalid_request",
      error_description: expect.stringMatching(/subject_token_type urn:x:saml is not supported/),
    });
    expect(await refusal({ ...base, actor_token: alice })).toMatchObject({
      error: "invalid_request",
      error_description: expect.stringMatching(/actor_token_type is required/),
    });
    // an invalid subject token is a bad parameter (RFC 8693 §2.2.2), not a 401
    expect(await refusal({ ...base, subject_token: "garbage", actor: "a" })).toMatchObject({
      status: 400,
      error: "invalid_request",
      error_description: expect.stringMatching(/^the subject_token is not acceptable/),
    });
    expect(await refusal({ grant_type: TOKEN_EXCHANGE, actor: "a" })).toMatchObject({
      status: 400,
      error: "invalid_request",
      error_description: "subject_token is required: the token being exchanged",
    });
    expect(await refusal({ ...base, actor: "a", scope: 'a"b' })).toMatchObject({
      status: 400,
      error: "invalid_scope",
    });
    expect(await refusal({ ...base, actor: "a", resource: "https://elsewhere.example" })).toMatchObject({
      status: 400,
      error: "invalid_target",
    });
    expect(await refusal({ ...base, actor: "a", colour: "blue" })).toMatchObject({
      status: 400,
      error: "invalid_request",
      error_description: "invalid request: body: unknown field 'colour'",
    });
  });
});

describe("policy sees the human behind a delegation token", () => {
  let guarded: OnbehalfServer;
  beforeAll(async () => {
    guarded = await startTestServer(idp, {
      tenants: [
        {
          id: "acme",
          policy: {
            defaults: { "*": { permission: "allow" as const } },
            rules: [
              {
                id: "no-contractors",
                tools: ["get_customer"],
                when: 'has(user.claims.employment) && user.claims.employment == "contractor"',
                effect: "deny" as const,
                reason: "contractors do not read customer records",
              },
              {
                id: "idp-mail-needs-approval",
                tools: ["read_email"],
                when: `user.issuer == "${idp.issuer}" && user.sub == "carol"`,
                effect: "ask" as const,
                reason: "reading mail through an agent needs approval",
              },
            ],
          },
        },
      ],
    });
  });
  afterAll(async () => {
    await guarded?.close();
  });

  const hop = async (subject: string, actor: string) => {
    const r = await call(guarded.url, "POST", "/v1/token", {
      body: {
        grant_type: TOKEN_EXCHANGE,
        subject_token: subject,
        subject_token_type: ACCESS_TOKEN_TYPE,
        actor,
      },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return r.body.access_token as string;
  };
  const decide = async (token: string, tool: string) =>
    (
      await call(guarded.url, "POST", "/v1/check", {
        token,
        body: { tool, agent: { name: "assistant" }, report: false },
      })
    ).body;

  it("holds rules on the human's claims, issuer and subject for every hop, as for the human", async () => {
    const carol = await userToken(idp, "carol", undefined, { employment: "contractor" });
    const one = await hop(carol, "assistant");
    const two = await hop(one, "researcher");
    for (const token of [carol, one, two]) {
      expect(await decide(token, "get_customer")).toMatchObject({ decision: "deny", rule: "no-contractors" });
      expect(await decide(token, "read_email")).toMatchObject({
        decision: "ask",
        rule: "idp-mail-needs-approval",
      });
    }
    // the delegation carries the claims as carol's issuer signed them: nothing the exchange request says
    expect(claims(two)).toMatchObject({
      obo_sub: "carol",
      obo_claims: { employment: "contractor", sub: "carol" },
    });
  });

  it("leaves another human's calls alone", async () => {
    const dave = await hop(await userToken(idp, "dave"), "assistant");
    expect(await decide(dave, "get_customer")).toMatchObject({ decision: "allow" });
    expect(await decide(dave, "read_email")).toMatchObject({ decision: "allow" });
  });
});
