/** The control plane over real HTTP, with tokens from a real oidc-provider. */
import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseVerifierKey, verifierKeyString, verifyCheckpoint } from "../../src/audit/checkpoint.js";
import { verifyInclusion } from "../../src/audit/merkle.js";
import type { OnbehalfServer } from "../../src/server/app.js";
import { type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { ADMIN, call, startTestServer, userToken } from "../support/server.js";

let idp: OidcProviderHandle;
let server: OnbehalfServer;
let alice: string;
let bob: string;

beforeAll(async () => {
  idp = await startOidcProvider();
  server = await startTestServer(idp);
  alice = await userToken(idp, "alice");
  bob = await userToken(idp, "bob", "customers:read");
});
afterAll(async () => {
  await server?.close();
  await idp?.close();
});

const check = (token: string | undefined, body: unknown) =>
  call(server.url, "POST", "/v1/check", { ...(token ? { token } : {}), body });
const audit = async (q: string) =>
  (await call(server.url, "GET", `/v1/audit?${q}`, { token: ADMIN })).body.records;
const flush = () => server.governor.flush();

describe("POST /v1/check", () => {
  it("allows, with the decision record, and takes the result back redacted", async () => {
    const r = await check(alice, {
      tool: "get_customer",
      args: { id: "c-1" },
      agent: { name: "support-bot" },
      trace_id: "tr-1",
    });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({
      decision: "allow",
      reason_code: "ok",
      chain: ["support-bot"],
      effective_scopes: ["customers:read", "orders:write", "email.read"],
      fail_mode: "fail_closed",
      post_transform: "redact",
    });
    const result = await call(server.url, "POST", `/v1/calls/${r.body.call_id}/result`, {
      token: alice,
      body: {
        status: "ok",
        output: { id: "c-1", ssn: "078-05-1120", cards: [{ number: "4111", brand: "visa" }] },
      },
    });
    expect(result.status).toBe(200);
    expect(result.body).toEqual({
      call_id: r.body.call_id,
      action: "redact",
      output: { id: "c-1", ssn: "[REDACTED]", cards: [{ number: "[REDACTED]", brand: "visa" }] },
    });
    await flush();
    const records = await audit(`user=alice&tool=get_customer`);
    const mine = records.filter((x: { call_id: string }) => x.call_id === r.body.call_id);
    expect(mine.map((x: { kind: string; outcome: string }) => [x.kind, x.outcome])).toEqual([
      ["outcome", "ok"],
      ["attempt", "pending"],
    ]);
    expect(mine[1]).toMatchObject({
      source: "api",
      trace_id: "tr-1",
      tenant: "acme",
      email: "alice@acme.test",
    });
  });

  it("refuses a second result, an unknown call id, and another user's call", async () => {
    const r = await check(alice, { tool: "get_customer", args: {}, agent: { name: "bot" } });
    const report = (token: string, id: string) =>
      call(server.url, "POST", `/v1/calls/${id}/result`, { token, body: { status: "ok", output: 1 } });
    expect((await report(bob, r.body.call_id)).status).toBe(403);
    expect((await report(alice, r.body.call_id)).status).toBe(200);
    expect((await report(alice, r.body.call_id)).status).toBe(404);
    expect((await report(alice, "01a2247d-0000-7000-8000-000000000000")).body.error.code).toBe(
      "ERR_NOT_FOUND",
    );
  });

  it("denies with the reason (200, decision deny) and never counts it", async () => {
    const r = await check(bob, { tool: "issue_refund", args: { amount: 10 }, agent: { name: "bot" } });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ decision: "deny", reason_code: "missing_scope" });
    expect(r.body.reason).toContain("orders:write");
  });

  it("answers a missing or bad token with 401 and audits the attempt with the reason, not what it sent", async () => {
    const none = await check(undefined, {
      tool: "get_customer",
      args: { filler: "x".repeat(4000) },
      agent: { name: "bot" },
      trace_id: "anon-1",
    });
    expect(none.status).toBe(401);
    expect(none.headers.get("www-authenticate")).toMatch(/^Bearer error="invalid_token"/);
    const forged = await check(`${alice.slice(0, -6)}AAAAAA`, {
      tool: "read_email",
      args: {},
      agent: { name: "bot" },
    });
    expect(forged.status).toBe(401);
    expect(forged.body.error.code).toMatch(/^ERR_TOKEN_/);
    await flush();
    const records = await audit("decision=deny&tool=read_email");
    expect(records[0]).toMatchObject({ user: null, reason_code: "unauthenticated", source: "api" });
    expect(records[0].reason).toMatch(/^ERR_TOKEN_/);
    const anon = (await audit("decision=deny&tool=get_customer")).find(
      (x: { trace_id: string }) => x.trace_id === "anon-1",
    );
    expect(anon.reason).toContain("ERR_TOKEN_MISSING");
    // Nobody answers for the arguments of a call with no identity: their digest and size only.
    expect(anon.args).toEqual({
      omitted: expect.stringMatching(/^40\d\d bytes, from a call with no identity$/),
    });
    expect(anon.args_digest).toMatch(/^sha256:/);
  });

  it("refuses a tenant that is not the token's", async () => {
    const r = await check(alice, {
      tool: "get_customer",
      args: {},
      agent: { name: "bot" },
      tenant: "globex",
    });
    expect(r.body).toMatchObject({ decision: "deny", reason_code: "tenant_mismatch" });
  });

  it("refuses malformed JSON, unknown fields, bad tiers and oversized bodies with clear 4xx, audited for known users", async () => {
    const bad = await call(server.url, "POST", "/v1/check", { token: alice, raw: '{"tool": "x",' });
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe("ERR_INVALID_JSON");
    const unknown = await check(alice, { tool: "get_customer", agent: { name: "bot" }, toool: 1 });
    expect(unknown.status).toBe(400);
    expect(unknown.body.error.message).toBe('invalid request: body: unknown field "toool"');
    const tier = await check(alice, { tool: "get_customer", agent: { name: "bot", tier: "batch" } });
    expect(tier.status).toBe(400);
    expect(tier.body.error.message).toContain("agent.tier");
    const huge = await call(server.url, "POST", "/v1/check", {
      token: alice,
      body: { tool: "get_customer", args: { blob: "x".repeat(1_100_000) }, agent: { name: "bot" } },
    });
    expect(huge.status).toBe(413);
    await flush();
    const refused = (await audit("user=alice&decision=deny")).find((x: { reason: string }) =>
      x.reason.includes("toool"),
    );
    expect(refused).toMatchObject({ reason_code: "error", tool: "get_customer", agent: "bot" });
  });

  it("audits a refused body under a delegation token as the agent the token signs, and cuts a long name", async () => {
    const minted = await call(server.url, "POST", "/v1/token", {
      body: {
        grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
        subject_token: alice,
        subject_token_type: "urn:ietf:params:oauth:token-type:access_token",
        actor: "mailer",
      },
    });
    const forged = await check(minted.body.access_token, {
      tool: "get_customer",
      agent: { name: "security-officer-bot" },
      forged: 1,
    });
    expect(forged.status).toBe(400);
    const long = await check(alice, { tool: "get_customer", agent: { name: "n".repeat(5_000) }, long: 1 });
    expect(long.status).toBe(400);
    await flush();
    const refusals = (await audit("user=alice&decision=deny&limit=1000")) as {
      reason: string;
      agent: string;
    }[];
    expect(refusals.find((x) => x.reason.includes('"forged"'))).toMatchObject({
      agent: "mailer",
      chain: ["mailer"],
    });
    expect(refusals.find((x) => x.reason.includes('"long"'))?.agent).toBe("n".repeat(200));
  });
});

describe("input no audit store can hold", () => {
  it("refuses args that are not an object with 400, before any decision, and audits the known user's attempt", async () => {
    for (const args of ["c-1", [1, 2], 42, null, true]) {
      const r = await check(alice, { tool: "get_customer", args, agent: { name: "bot" } });
      expect(r.status).toBe(400);
      expect(r.body.error).toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
      expect(r.body.error.message).toContain("args: args must be a JSON object of named arguments");
      expect(r.body.decision).toBeUndefined();
    }
    const spooled = await call(server.url, "POST", "/v1/audit/spool", {
      token: alice,
      body: {
        records: [
          {
            call_id: "01234567-spool-args",
            time: new Date().toISOString(),
            tool: "get_customer",
            args: ["c-1"],
            agent: "bot",
            decision: "allow",
            reason_code: "fail_open",
            outcome: "ok",
          },
        ],
      },
    });
    expect(spooled.body.refused).toMatchObject([{ index: 0, code: "invalid" }]);
    await flush();
    const refused = (await audit("user=alice&decision=deny&limit=1000")).filter((x: { reason: string }) =>
      x.reason.includes("args must be a JSON object"),
    );
    expect(refused.length).toBeGreaterThanOrEqual(6);
  });

  it("refuses control characters in tool, agent, tenant and trace id with 400 on every path, and the audit goes on", async () => {
    const cases: [unknown, string][] = [
      [{ tool: "x\u0000y", agent: { name: "bot" } }, "tool"],
      [{ tool: "get_customer", agent: { name: "b\u0000t" } }, "agent.name"],
      [{ tool: "get_customer", agent: { name: "bot" }, tenant: "ac\u001bme" }, "tenant"],
      [{ tool: "get_customer", agent: { name: "bot" }, trace_id: "t\ud800" }, "trace_id"],
    ];
    for (const [body, field] of cases) {
      for (const token of [undefined, "not-a-token", alice]) {
        const r = await check(token, body);
        expect(r.status).toBe(400);
        expect(r.body.error.message).toContain(`${field}: this value must not contain control characters`);
      }
    }
    const spooled = await call(server.url, "POST", "/v1/audit/spool", {
      token: alice,
      body: {
        records: [
          {
            call_id: "01234567-spool-nul",
            time: new Date().toISOString(),
            tool: "x\u0000y",
            agent: "bot",
            decision: "allow",
            reason_code: "fail_open",
            outcome: "ok",
          },
        ],
      },
    });
    // The batch is answered; the record is refused, and says why (good records of a batch are kept).
    expect(spooled.status).toBe(200);
    expect(spooled.body.refused).toMatchObject([{ index: 0, code: "invalid" }]);
    expect(spooled.body.refused[0].reason).toContain("tool: this value must not contain control characters");
    // The writer was never wedged: decisions go on for everyone, and the server is healthy.
    const after = await check(bob, { tool: "get_customer", agent: { name: "bot" } });
    expect(after.body).toMatchObject({ decision: "allow" });
    expect((await call(server.url, "GET", "/healthz")).status).toBe(200);
    // The known user's refused attempts are on record, the unstorable text as its digest.
    const refused = (await audit("user=alice&decision=deny&limit=1000")).filter((x: { reason: string }) =>
      x.reason.includes("must not contain control characters"),
    );
    expect(refused.length).toBeGreaterThanOrEqual(4);
    expect(refused.map((x: { tool: string }) => x.tool)).toContain(
      `unsafe:sha256:${createHash("sha256").update("x\u0000y").digest("hex")}`,
    );
  });
});

describe("identities and names no audit store can hold", () => {
  it("answers 401 (never 500) for a token whose subject, tenant or email holds a control character", async () => {
    for (const claims of [{ sub: "eve\u001b[2J" }, { tenant: "ac\u0000me" }, { email: "e\ud800@x.test" }]) {
      const token = await idp.getToken({
        scope: "customers:read",
        claims: { sub: "eve", tenant: "acme", ...claims },
      });
      for (const path of ["/v1/check", "/v1/verify"]) {
        const r = await call(server.url, "POST", path, {
          token,
          body: { tool: "get_customer", agent: { name: "bot" } },
        });
        expect(r.status).toBe(401);
        expect(r.body.error.code).toBe("ERR_TOKEN_CLAIM_INVALID");
        expect(r.headers.get("www-authenticate")).toMatch(/^[\x20-\x7e]+$/);
      }
    }
  });

  it("refuses agent names with unpaired surrogates and scopes with control characters at /v1/token", async () => {
    const exchange = (extra: Record<string, string>) =>
      call(server.url, "POST", "/v1/token", {
        body: {
          grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
          subject_token: alice,
          subject_token_type: "urn:ietf:params:oauth:token-type:access_token",
          actor: "bot",
          ...extra,
        },
      });
    const surrogate = await exchange({ actor: "bot\ud800" });
    expect(surrogate.status).toBe(400);
    expect(surrogate.body.error_description).toMatch(
      /actor: an agent name has no spaces, control characters or unpaired surrogates/,
    );
    const scope = await exchange({ scope: "customers:read\u0000admin" });
    expect(scope.status).toBe(400);
    expect(scope.body).toMatchObject({
      error: "invalid_scope",
      error_description: expect.stringMatching(/^scope is space-separated scope tokens/),
    });
    expect((await exchange({ scope: "customers:read" })).status).toBe(200);
  });
});

describe("reading the audit", () => {
  it("shows a decision in GET /v1/audit the moment it was made, even with a slow group commit", async () => {
    const slow = await startTestServer(idp, { audit: { store: "sqlite::memory:", flush_ms: 5_000 } });
    try {
      const anonymous = await call(slow.url, "POST", "/v1/check", {
        body: { tool: "read_email", agent: { name: "bot" }, trace_id: "ryw-1" },
      });
      expect(anonymous.status).toBe(401); // a 401 does not wait for its record; the query must
      const allowed = await call(slow.url, "POST", "/v1/check", {
        token: alice,
        body: { tool: "get_customer", agent: { name: "bot" }, trace_id: "ryw-2" },
      });
      expect(allowed.body.decision).toBe("allow");
      const records = (await call(slow.url, "GET", "/v1/audit?limit=10", { token: ADMIN })).body.records;
      expect(records.map((r: { trace_id: string }) => r.trace_id).sort()).toEqual(["ryw-1", "ryw-2"]);
    } finally {
      await slow.close();
    }
  });
});

describe("POST /v1/verify", () => {
  it("returns the principal, or 401", async () => {
    const r = await call(server.url, "POST", "/v1/verify", { token: alice });
    expect(r.body).toMatchObject({
      sub: "alice",
      user: "alice",
      tenant: "acme",
      email: "alice@acme.test",
      issuer: idp.issuer,
    });
    expect((await call(server.url, "POST", "/v1/verify", { token: "nope" })).status).toBe(401);
  });
});

describe("admin API", () => {
  it("needs an admin token", async () => {
    expect((await call(server.url, "GET", "/v1/audit", { token: alice })).status).toBe(401);
    expect(
      (await call(server.url, "PATCH", "/v1/admin/tenants/acme/policy", { token: alice, body: {} })).status,
    ).toBe(401);
  });

  it("patches a policy live, refuses an invalid change without touching the policy, and audits admin events", async () => {
    const before = await check(alice, { tool: "read_email", args: {}, agent: { name: "bot" } });
    expect(before.body.decision).toBe("allow");
    const patched = await call(server.url, "PATCH", "/v1/admin/tenants/acme/policy", {
      token: ADMIN,
      body: { tools: { read_email: { "*": { permission: "deny" } } } },
    });
    expect(patched.status).toBe(200);
    expect((await check(alice, { tool: "read_email", args: {}, agent: { name: "bot" } })).body).toMatchObject(
      {
        decision: "deny",
        reason_code: "permission_deny",
        layer: "tools.read_email.*",
      },
    );
    const invalid = await call(server.url, "PATCH", "/v1/admin/tenants/acme/policy", {
      token: ADMIN,
      body: { defaults: { interactiv: { permission: "allow" } } },
    });
    expect(invalid.status).toBe(400);
    expect(invalid.body.error.code).toBe("ERR_CONFIG_INVALID");
    expect(invalid.body.error.message).toContain('unknown tier "interactiv"');
    expect((await check(alice, { tool: "read_email", args: {}, agent: { name: "bot" } })).body.decision).toBe(
      "deny",
    );
    await call(server.url, "PATCH", "/v1/admin/tenants/acme/policy", {
      token: ADMIN,
      body: { tools: { read_email: null } },
    });
    expect((await check(alice, { tool: "read_email", args: {}, agent: { name: "bot" } })).body.decision).toBe(
      "allow",
    );
    await flush();
    const records = (await call(server.url, "GET", "/v1/audit?limit=200", { token: ADMIN })).body.records;
    // who changed it: the admin token's fingerprint, never the token
    expect(
      records.filter((x: { kind: string }) => x.kind === "admin").map((x: { reason: string }) => x.reason),
    ).toContainEqual(expect.stringMatching(/^patched the policy of tenant acme \(by admin:[0-9a-f]{8}\)$/));
  });

  it("replaces a tenant (revoking a user), declares tools and deletes tenants", async () => {
    const put = await call(server.url, "PUT", "/v1/admin/tenants/globex", {
      token: ADMIN,
      body: {
        require_membership: true,
        users: [{ uid: "carol" }],
        policy: { defaults: { "*": { permission: "allow" } } },
      },
    });
    expect(put.body).toMatchObject({ id: "globex", require_membership: true });
    const dave = await userToken(idp, "dave", "customers:read", { tenant: "globex" });
    expect(
      (await check(dave, { tool: "get_customer", args: {}, agent: { name: "bot" } })).body.reason_code,
    ).toBe("not_a_member");
    const tool = await call(server.url, "PUT", "/v1/admin/tools/weather", {
      token: ADMIN,
      body: { required_scopes: ["email.read"] },
    });
    expect(tool.body).toMatchObject({ name: "weather", required_scopes: ["email.read"] });
    expect((await check(alice, { tool: "weather", args: {}, agent: { name: "bot" } })).body.decision).toBe(
      "allow",
    );
    expect((await call(server.url, "DELETE", "/v1/admin/tenants/globex", { token: ADMIN })).status).toBe(204);
    expect((await call(server.url, "DELETE", "/v1/admin/tenants/globex", { token: ADMIN })).status).toBe(404);
  });
});

describe("audit API and public endpoints", () => {
  it("serves a signed checkpoint and inclusion proofs an auditor can check", async () => {
    await check(alice, { tool: "get_customer", args: {}, agent: { name: "bot" } });
    await server.governor.auditLog.checkpoint().catch(() => {});
    await flush();
    await server.governor.auditLog.checkpoint();
    const cp = await call(server.url, "GET", "/v1/audit/checkpoint", { token: ADMIN });
    expect(cp.status).toBe(200);
    const { createPublicKey } = await import("node:crypto");
    const { loadOrCreateSigningKey } = await import("../../src/identity/keys.js");
    const { auditKeyPath } = await import("../../src/govern/bootstrap.js");
    const key = loadOrCreateSigningKey(
      auditKeyPath({ config: server.governor.config, baseDir: process.cwd() }),
    );
    const verifier = parseVerifierKey(verifierKeyString(cp.body.log, createPublicKey(key.privateKey)));
    const head = verifyCheckpoint(cp.body.checkpoint, verifier);
    const proof = await call(server.url, "GET", `/v1/audit/proof/1`, { token: ADMIN });
    verifyInclusion(
      0,
      head.size,
      Buffer.from(proof.body.record.leaf_hash, "hex"),
      proof.body.proof.map((p: string) => Buffer.from(p, "base64")),
      head.root,
    );
  });

  it("publishes its token keys, health and metrics", async () => {
    const jwks = await call(server.url, "GET", "/.well-known/jwks.json");
    expect(jwks.body.keys).toHaveLength(1);
    expect(jwks.body.keys[0]).toMatchObject({ kty: "OKP", crv: "Ed25519", use: "sig" });
    expect(jwks.body.keys[0]).not.toHaveProperty("d");
    expect((await call(server.url, "GET", "/healthz")).body).toEqual({
      status: "ok",
      audit: true,
      state: true,
      log: server.governor.auditLog.logId,
    });
    const metrics = await call(server.url, "GET", "/metrics");
    expect(metrics.body).toMatch(/onbehalf_decisions_total\{decision="allow",reason_code="ok"\} \d+/);
    expect(metrics.body).toMatch(/onbehalf_http_requests_total\{route="\/v1\/check",status="200"\} \d+/);
  });
});

describe("POST /v1/audit/spool", () => {
  const spooled = (callId: string, extra: Record<string, unknown> = {}) => ({
    call_id: callId,
    time: new Date(Date.now() - 60_000).toISOString(),
    tool: "get_customer",
    args: { id: "c-9", ssn: "078-05-1120" },
    agent: "support-bot",
    chain: ["support-bot"],
    decision: "allow",
    reason_code: "fail_open",
    reason: "control plane unreachable; tenant fails open",
    outcome: "ok",
    ...extra,
  });

  it("stores replayed records once, under the token's human, with source spool and redacted arguments", async () => {
    const records = [spooled("spool-call-0001"), spooled("spool-call-0002", { outcome: "error" })];
    const first = await call(server.url, "POST", "/v1/audit/spool", { token: alice, body: { records } });
    expect(first.body).toMatchObject({ accepted: 2, duplicates: 0, refused: [] });
    const again = await call(server.url, "POST", "/v1/audit/spool", { token: alice, body: { records } });
    expect(again.body).toMatchObject({ accepted: 0, duplicates: 2, refused: [] });
    const stored = (await audit("user=alice&limit=200")).filter((r: { call_id: string }) =>
      r.call_id.startsWith("spool-call-"),
    );
    expect(stored).toHaveLength(2);
    expect(stored[0]).toMatchObject({
      source: "spool",
      user: "alice",
      tenant: "acme",
      reason_code: "fail_open",
      args: { ssn: "[REDACTED]" },
    });
  });

  it("takes the human from the token only, and refuses records that claim one", async () => {
    const forged = await call(server.url, "POST", "/v1/audit/spool", {
      token: alice,
      body: { records: [spooled("spool-call-0003", { user: "bob" })] },
    });
    expect(forged.status).toBe(200);
    expect(forged.body).toMatchObject({ accepted: 0, refused: [{ index: 0, code: "invalid" }] });
    expect(forged.body.refused[0].reason).toContain('unknown field "user"');
    expect((await call(server.url, "POST", "/v1/audit/spool", { body: { records: [] } })).status).toBe(401);
  });
});
