/**
 * Tenants bound to the identity providers that may vouch for them, with two real oidc-providers: a user of
 * issuer B whose token claims tenant "acme" (a claim B's administrators control) cannot act in acme, whose users
 * come from issuer A, on any path: in-process, /v1/check, /v1/token, the MCP gateway, the spool.
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newCallId } from "../../src/audit/call-id.js";
import type { ConfigInput } from "../../src/config/schema.js";
import { isOnbehalfError } from "../../src/errors.js";
import { loadConfigObject } from "../../src/govern/config.js";
import type { OnbehalfServer } from "../../src/server/app.js";
import { type HttpUpstream, startHttpUpstream } from "../support/mcp-upstream.js";
import { DEFAULT_RESOURCE, type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { ADMIN, call, serverConfig, startTestServer } from "../support/server.js";

const GATEWAY = "https://gateway.binding.test";
let a: OidcProviderHandle;
let b: OidcProviderHandle;
let crm: HttpUpstream;
let server: OnbehalfServer;

const policy = { defaults: { "*": { permission: "allow" as const } } };
function config(tenants: ConfigInput["tenants"]): Partial<ConfigInput> {
  const base = serverConfig(a);
  return {
    server: { ...base.server, public_url: GATEWAY },
    issuers: [
      { issuer: a.issuer, audience: [DEFAULT_RESOURCE, `${GATEWAY}/mcp`], preset: "generic" },
      { issuer: b.issuer, audience: [DEFAULT_RESOURCE, `${GATEWAY}/mcp`], preset: "generic" },
    ],
    tools: [
      { name: "get_customer", required_scopes: ["customers:read"] },
      { name: "crm.get_customer", required_scopes: ["customers:read"] },
    ],
    tenants,
    upstreams: [{ name: "crm", transport: "streamable-http", url: crm.url }],
  };
}

beforeAll(async () => {
  [a, b, crm] = await Promise.all([startOidcProvider(), startOidcProvider(), startHttpUpstream()]);
  server = await startTestServer(
    a,
    config([
      { id: "acme", issuers: [a.issuer], policy },
      { id: "globex", issuers: [b.issuer], policy },
    ]),
  );
});
afterAll(async () => {
  await server?.close();
  await Promise.allSettled([a?.close(), b?.close(), crm?.stop()]);
});

const tokenOf = (idp: OidcProviderHandle, sub: string, tenant: string, resource = DEFAULT_RESOURCE) =>
  idp.getToken({ resource, scope: "customers:read", claims: { sub, tenant } });
const check = (token: string) =>
  call(server.url, "POST", "/v1/check", { token, body: { tool: "get_customer", agent: { name: "bot" } } });

describe("tenants bound to their issuers", () => {
  it("lets each issuer's own users act in their tenant, and refuses the other issuer's claim on /v1/check", async () => {
    expect((await check(await tokenOf(a, "alice", "acme"))).body).toMatchObject({ decision: "allow" });
    expect((await check(await tokenOf(b, "gil", "globex"))).body).toMatchObject({ decision: "allow" });
    const crossed = await check(await tokenOf(b, "mallory", "acme"));
    expect(crossed.status).toBe(200);
    expect(crossed.body).toMatchObject({ decision: "deny", reason_code: "tenant_mismatch" });
    expect(crossed.body.reason).toBe(
      `tenant "acme" takes its users from ${a.issuer}; a token of ${b.issuer} may not vouch for it`,
    );
    const audited = (await call(server.url, "GET", "/v1/audit?tenant=acme&decision=deny", { token: ADMIN }))
      .body.records;
    expect(audited[0]).toMatchObject({ user: `${b.issuer}#mallory`, reason_code: "tenant_mismatch" });
  });

  it("keeps neither the arguments nor the run of a caller the tenant does not take", async () => {
    const crossed = await call(server.url, "POST", "/v1/check", {
      token: await tokenOf(b, "mallory", "acme"),
      body: {
        tool: "get_customer",
        args: { note: "URGENT: approve refund 4711 now" },
        agent: { name: "bot" },
        trace_id: "acme-run-0001",
      },
    });
    expect(crossed.body).toMatchObject({ decision: "deny", reason_code: "tenant_mismatch" });
    await server.governor.flush();
    const [record] = (await server.governor.queryAudit({ call_id: crossed.body.call_id })).records;
    expect(record).toMatchObject({
      tenant: "acme",
      trace_id: null,
      args: { omitted: expect.stringMatching(/bytes, from a caller tenant acme does not take$/) },
    });
    expect(JSON.stringify(record)).not.toContain("4711");
    expect(record?.args_digest).toMatch(/^sha256:/);
  });

  it("refuses the cross-issuer claim in-process too", async () => {
    const gov = server.governor;
    const lookup = gov.governed({ name: "get_customer", execute: async () => "ran" });
    const mallory = await gov.verify(await tokenOf(b, "mallory", "acme"));
    const refused = await gov.runAs(mallory, { agent: "bot" }, () => lookup({})).catch((e: unknown) => e);
    expect(isOnbehalfError(refused, "ERR_POLICY_DENIED")).toBe(true);
    expect((refused as Error).message).toMatch(/^tenant_mismatch:/);
    const alice = await gov.verify(await tokenOf(a, "alice", "acme"));
    await expect(gov.runAs(alice, { agent: "bot" }, () => lookup({}))).resolves.toBe("ran");
  });

  it("issues no delegation for the cross-issuer claim, and a delegation keeps the binding it came from", async () => {
    const exchange = (subject: string) =>
      call(server.url, "POST", "/v1/token", {
        body: {
          grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
          subject_token: subject,
          subject_token_type: "urn:ietf:params:oauth:token-type:access_token",
          actor: "researcher",
        },
      });
    const refused = await exchange(await tokenOf(b, "mallory", "acme"));
    // an unacceptable subject token is an OAuth invalid_request (RFC 8693 §2.2.2)
    expect(refused.status).toBe(400);
    expect(refused.body.error).toBe("invalid_request");
    expect(refused.body.error_description).toMatch(/^tenant_mismatch: tenant 'acme' takes its users from/);
    const delegated = await exchange(await tokenOf(a, "alice", "acme"));
    expect(delegated.status).toBe(200);
    expect((await check(delegated.body.access_token)).body).toMatchObject({
      decision: "allow",
      chain: ["researcher"],
    });
    // An identity provider's token cannot name the issuer a delegation will carry.
    const forging = await b.getToken({
      scope: "customers:read",
      claims: { sub: "mallory", tenant: "acme", obo_issuer: a.issuer },
    });
    expect((await exchange(forging)).body).toMatchObject({
      error: "invalid_request",
      error_description: expect.stringMatching(/^tenant_mismatch/),
    });
  });

  it("shows the cross-issuer claim no tool on the MCP gateway and refuses its calls", async () => {
    const connect = async (token: string) => {
      const client = new Client({ name: "bot", version: "1.0.0" });
      await client.connect(
        new StreamableHTTPClientTransport(new URL(`${server.url}/mcp`), {
          requestInit: { headers: { authorization: `Bearer ${token}` } },
        }),
      );
      return client;
    };
    const alice = await connect(await tokenOf(a, "alice", "acme", `${GATEWAY}/mcp`));
    expect((await alice.listTools()).tools.map((t) => t.name)).toEqual(["crm.get_customer"]);
    const mallory = await connect(await tokenOf(b, "mallory", "acme", `${GATEWAY}/mcp`));
    expect((await mallory.listTools()).tools).toEqual([]);
    const r = await mallory.callTool({ name: "crm.get_customer", arguments: { id: "c-1" } });
    expect(r.isError).toBe(true);
    expect((r.content as { text: string }[])[0]!.text).toMatch(/^denied \(tenant_mismatch\)/);
    await Promise.all([alice.close(), mallory.close()]);
  });

  it("stores no spooled record for the cross-issuer claim", async () => {
    const record = {
      call_id: newCallId(),
      time: new Date().toISOString(),
      tool: "get_customer",
      agent: "bot",
      decision: "deny",
      reason_code: "fail_closed",
      outcome: "none",
    };
    const r = await call(server.url, "POST", "/v1/audit/spool", {
      token: await tokenOf(b, "mallory", "acme"),
      body: { records: [record] },
    });
    expect(r.body).toMatchObject({ accepted: 0, refused: [{ index: 0, code: "tenant_mismatch" }] });
  });
});

describe("the binding in the configuration", () => {
  it("is an error, explaining the attack and the fix, when several issuers are trusted and a tenant names none", () => {
    expect(() => loadConfigObject(config([{ id: "acme", policy }]))).toThrow(
      /tenant "acme" names no issuers, and 2 are trusted .*: a token from any of them whose tenant claim says "acme" .* would act in this tenant\. List the issuers that may vouch for its users/,
    );
  });

  it("binds a tenant to the issuer that pins it, and to the one issuer when only one is trusted", () => {
    const pinned = config([{ id: "globex", policy }]);
    pinned.issuers![1] = { ...pinned.issuers![1]!, claims: { tenant: { value: "globex" } } };
    expect(loadConfigObject(pinned).policy.tenants.get("globex")!.issuers).toEqual(new Set([b.issuer]));
    const one = { ...config([{ id: "acme", policy }]), issuers: [config([]).issuers![0]!] };
    expect(loadConfigObject(one).policy.tenants.get("acme")!.issuers).toEqual(new Set([a.issuer]));
  });

  it("refuses an issuer a tenant names that is not trusted, and keeps the binding through the admin API", async () => {
    expect(() =>
      loadConfigObject(config([{ id: "acme", issuers: ["https://stranger.example"], policy }])),
    ).toThrow(/issuer "https:\/\/stranger\.example" is not trusted/);
    const put = await call(server.url, "PUT", "/v1/admin/tenants/initech", {
      token: ADMIN,
      body: { policy },
    });
    expect(put.status).toBe(400);
    expect(put.body.error.message).toMatch(/tenant "initech" names no issuers, and 2 are trusted/);
  });
});
