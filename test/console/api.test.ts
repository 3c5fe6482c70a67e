/**
 * The console's API over real HTTP: sign-in and its cookie, CSRF on every change, roles, and tenant isolation
 * enforced by the server (not by the page): an approver of one tenant gets nothing of another.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { OnbehalfServer } from "../../src/server/app.js";
import { MAX_CONSOLE_SESSIONS_PER_OWNER } from "../../src/server/state.js";
import { CookieJar } from "../support/console.js";
import { DEFAULT_RESOURCE, type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { ACME_POLICY, ADMIN, serverConfig, startTestServer, userToken } from "../support/server.js";

let idp: OidcProviderHandle;
let server: OnbehalfServer;
let alice: string;
let gus: string;
let mona: string;

interface Answer {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: tests read response bodies field by field
  body: any;
  headers: Headers;
  text: string;
}

/** A console request as the page makes it: the cookie, the CSRF header on changes when given. */
async function ui(
  method: string,
  path: string,
  options: {
    jar?: CookieJar;
    csrf?: string;
    body?: unknown;
    headers?: Record<string, string>;
    base?: string;
  } = {},
): Promise<Answer> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.jar?.cookie) headers["cookie"] = options.jar.cookie;
  if (options.csrf !== undefined) headers["x-csrf-token"] = options.csrf;
  if (options.body !== undefined) headers["content-type"] ??= "application/json";
  const res = await fetch(`${options.base ?? server.url}${path}`, {
    method,
    headers,
    redirect: "manual",
    ...(options.body === undefined
      ? {}
      : { body: typeof options.body === "string" ? options.body : JSON.stringify(options.body) }),
  });
  options.jar?.take(res.headers);
  const text = await res.text();
  let body: unknown = null;
  try {
    body = JSON.parse(text);
  } catch {}
  return { status: res.status, body, headers: res.headers, text };
}

async function signIn(
  body: unknown,
  base?: string,
): Promise<{ jar: CookieJar; csrf: string; answer: Answer }> {
  const jar = new CookieJar();
  const answer = await ui("POST", "/ui/session", { jar, body, ...(base === undefined ? {} : { base }) });
  return { jar, csrf: answer.body?.csrf, answer };
}

async function check(token: string, tool: string, args: unknown) {
  const r = await fetch(`${server.url}/v1/check`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ tool, args, agent: { name: "support-bot" } }),
  });
  return (await r.json()) as { decision: string; approval?: { id: string } };
}

beforeAll(async () => {
  idp = await startOidcProvider({
    scopes: ["customers:read", "orders:write", "email.read", "onbehalf:approve", "onbehalf:admin"],
  });
  server = await startTestServer(idp, {
    server: { ...serverConfig(idp).server, console_admin_scope: "onbehalf:admin" },
  });
  alice = await userToken(idp, "alice", "customers:read orders:write");
  gus = await userToken(idp, "gus", "customers:read orders:write", { tenant: "globex" });
  mona = await userToken(idp, "mona", "onbehalf:approve");
  await check(alice, "get_customer", { id: "c-1" });
  await check(gus, "get_customer", { id: "g-1" });
});
afterAll(async () => {
  await server?.close();
  await idp?.close();
});

describe("console sign-in", () => {
  it("signs in with an admin token into an HttpOnly, SameSite=Strict cookie scoped to /ui; no answer repeats the token", async () => {
    const { jar, answer } = await signIn({ token: ADMIN });
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ role: "admin", tenant: null });
    const cookie = answer.headers.get("set-cookie")!;
    expect(cookie).toMatch(
      /^onbehalf_console=[A-Za-z0-9_-]{43}; Path=\/ui; HttpOnly; SameSite=Strict; Max-Age=\d+$/,
    );
    expect(answer.text).not.toContain(ADMIN);
    const me = await ui("GET", "/ui/api/me", { jar });
    expect(me.body).toMatchObject({ role: "admin", csrf: answer.body.csrf });
    expect(me.headers.get("cache-control")).toBe("no-store");
    expect(me.text).not.toContain(ADMIN);
  });

  it("takes the token as a form field too, and lands on the console", async () => {
    const jar = new CookieJar();
    const r = await ui("POST", "/ui/session", {
      jar,
      body: `token=${encodeURIComponent(ADMIN)}`,
      headers: { "content-type": "application/x-www-form-urlencoded" },
    });
    expect(r.status).toBe(303);
    expect(r.headers.get("location")).toBe("/ui/");
    expect((await ui("GET", "/ui/api/me", { jar })).body.role).toBe("admin");
  });

  it("marks the cookie Secure when the console is reached over HTTPS", async () => {
    const https = await startTestServer(idp, {
      server: { ...serverConfig(idp).server, public_url: "https://console.example" },
    });
    try {
      const { answer } = await signIn({ token: ADMIN }, https.url);
      expect(answer.headers.get("set-cookie")).toMatch(/; Secure$/);
      // behind the proxy, the page's origin is public_url's, not the Host the proxy forwards
      const proxied = await ui("POST", "/ui/session", {
        base: https.url,
        body: { token: ADMIN },
        headers: { origin: "https://console.example", "sec-fetch-site": "same-origin" },
      });
      expect(proxied.status).toBe(200);
    } finally {
      await https.close();
    }
  });

  it("signs in an IdP user with onbehalf:approve as an approver of their tenant, one with the admin scope as an admin, and refuses anyone else", async () => {
    expect((await signIn({ token: mona })).answer.body).toMatchObject({
      role: "approver",
      tenant: "acme",
      who: "mona",
    });
    const boss = await userToken(idp, "boss", "onbehalf:admin");
    expect((await signIn({ token: boss })).answer.body).toMatchObject({ role: "admin", who: "boss" });
    const plain = await signIn({ token: alice });
    expect(plain.answer.status).toBe(403);
    expect(plain.answer.body.error.code).toBe("ERR_POLICY_DENIED");
    expect(plain.jar.cookie).toBeNull();
    const forged = await signIn({ token: `${alice.slice(0, -4)}AAAA` });
    expect(forged.answer.status).toBe(401);
    expect((await signIn({ token: "not-the-admin-token" })).answer.status).toBe(401);
  });

  it("takes the admin scope only from an issuer that may vouch for every tenant", async () => {
    // acme's identity provider vouches for both tenants; globex's own provider only for globex
    const globexIdp = await startOidcProvider({ scopes: ["onbehalf:approve", "onbehalf:admin"] });
    const issuer = (i: OidcProviderHandle) => ({
      issuer: i.issuer,
      audience: DEFAULT_RESOURCE,
      preset: "generic" as const,
    });
    const shared = await startTestServer(idp, {
      server: { ...serverConfig(idp).server, console_admin_scope: "onbehalf:admin" },
      issuers: [issuer(idp), issuer(globexIdp)],
      tenants: [
        { id: "acme", issuers: [idp.issuer], policy: ACME_POLICY },
        { id: "globex", issuers: [idp.issuer, globexIdp.issuer], policy: ACME_POLICY },
      ],
    });
    try {
      const at = (token: string) => signIn({ token }, shared.url);
      const mallory = await userToken(globexIdp, "mallory", "onbehalf:admin", { tenant: "globex" });
      const refused = await at(mallory);
      expect(refused.answer.status).toBe(403);
      expect(refused.answer.body.error.message).toContain("a token of");
      expect(refused.jar.cookie).toBeNull();
      // with the approve scope too, she is what her own tenant's issuer makes her: an approver of globex
      const both = await userToken(globexIdp, "mallory", "onbehalf:admin onbehalf:approve", {
        tenant: "globex",
      });
      expect((await at(both)).answer.body).toMatchObject({ role: "approver", tenant: "globex" });
      const boss = await userToken(idp, "boss", "onbehalf:admin");
      expect((await at(boss)).answer.body).toMatchObject({ role: "admin", tenant: null });
    } finally {
      await shared.close();
      await globexIdp.close();
    }
  });

  it("refuses a sign-in posted by another site's page", async () => {
    const fromOrigin = await ui("POST", "/ui/session", {
      body: { token: ADMIN },
      headers: { origin: "https://evil.example" },
    });
    expect(fromOrigin.status).toBe(403);
    expect(fromOrigin.body.error.code).toBe("ERR_CSRF");
    const crossSite = await ui("POST", "/ui/session", {
      body: { token: ADMIN },
      headers: { "sec-fetch-site": "cross-site" },
    });
    expect(crossSite.body.error.code).toBe("ERR_CSRF");
  });

  it("answers every console API with 401 without a session", async () => {
    for (const path of [
      "/ui/api/me",
      "/ui/api/audit",
      "/ui/api/approvals",
      "/ui/api/health",
      "/ui/api/policy/tenants",
    ]) {
      const r = await ui("GET", path);
      expect([path, r.status, r.body.error.code]).toEqual([path, 401, "ERR_TOKEN_MISSING"]);
    }
  });

  it("ends a human's own oldest session when they open one too many, and nobody else's", async () => {
    const admin = await signIn({ token: ADMIN });
    const mine: CookieJar[] = [];
    for (let i = 0; i <= MAX_CONSOLE_SESSIONS_PER_OWNER; i++) mine.push((await signIn({ token: mona })).jar);
    const status = async (jar: CookieJar) => (await ui("GET", "/ui/api/me", { jar })).status;
    expect(await status(mine[0]!)).toBe(401);
    for (const jar of mine.slice(1)) expect(await status(jar)).toBe(200);
    expect(await status(admin.jar)).toBe(200);
  });
});

describe("CSRF", () => {
  it("refuses every change without the session's CSRF token, and takes it with the token", async () => {
    const { jar, csrf } = await signIn({ token: ADMIN });
    const asked = await check(alice, "issue_refund", { order: "o-9", amount: 900 });
    expect(asked.decision).toBe("ask");
    const id = asked.approval!.id;
    const changes: [string, string, unknown][] = [
      ["POST", `/ui/api/approvals/${id}`, { decision: "approve" }],
      ["POST", "/ui/api/policy/whatif", { tenant: "acme", policy: {} }],
      ["DELETE", "/ui/session", undefined],
    ];
    for (const [method, path, body] of changes) {
      for (const token of [undefined, "", `${csrf.slice(0, -1)}x`]) {
        const r = await ui(method, path, { jar, body, ...(token === undefined ? {} : { csrf: token }) });
        expect([method, path, r.status, r.body?.error?.code]).toEqual([method, path, 403, "ERR_CSRF"]);
      }
    }
    // Nothing happened: the approval still waits, the session still holds.
    expect(
      (await ui("GET", "/ui/api/approvals", { jar })).body.approvals.map((a: { id: string }) => a.id),
    ).toContain(id);
    const approved = await ui("POST", `/ui/api/approvals/${id}`, {
      jar,
      csrf,
      body: { decision: "deny", note: "no" },
    });
    expect(approved.body).toMatchObject({
      status: "denied",
      decided_by: expect.stringMatching(/^admin:/),
      note: "no",
    });
    expect((await ui("DELETE", "/ui/session", { jar, csrf })).status).toBe(204);
    expect(jar.cookie).toBeNull();
  });

  it("ends the session on sign-out: the old cookie no longer opens anything", async () => {
    const { jar, csrf } = await signIn({ token: ADMIN });
    const stolen = jar.cookie;
    await ui("DELETE", "/ui/session", { jar, csrf });
    const r = await ui("GET", "/ui/api/me", { headers: { cookie: stolen! } });
    expect(r.status).toBe(401);
  });
});

describe("tenant isolation", () => {
  it("shows an approver of acme the records of acme only, whatever they ask", async () => {
    const { jar } = await signIn({ token: mona });
    const page = await ui("GET", "/ui/api/audit?kind=", { jar });
    expect(page.status).toBe(200);
    expect(page.body.records.length).toBeGreaterThan(0);
    expect(new Set(page.body.records.map((r: { tenant: string }) => r.tenant))).toEqual(new Set(["acme"]));
    const other = await ui("GET", "/ui/api/audit?tenant=globex", { jar });
    expect([other.status, other.body.error.code]).toEqual([403, "ERR_POLICY_DENIED"]);
    const byUser = await ui("GET", "/ui/api/audit?user=gus", { jar });
    expect(byUser.body.records).toEqual([]);
    const exported = await ui("GET", "/ui/api/audit/export?format=jsonl", { jar });
    expect(exported.text).toContain('"tenant":"acme"');
    expect(exported.text).not.toContain("globex");

    // The record of globex, asked for by its address: not found, as if it did not exist.
    const admin = await signIn({ token: ADMIN });
    const theirs = (await ui("GET", "/ui/api/audit?tenant=globex", { jar: admin.jar })).body.records[0];
    expect(theirs.tenant).toBe("globex");
    const direct = await ui("GET", `/ui/api/audit/records/${encodeURIComponent(theirs.log)}/${theirs.seq}`, {
      jar,
    });
    expect([direct.status, direct.body.error.code]).toEqual([404, "ERR_NOT_FOUND"]);
    expect(
      (
        await ui("GET", `/ui/api/audit/records/${encodeURIComponent(theirs.log)}/${theirs.seq}`, {
          jar: admin.jar,
        })
      ).status,
    ).toBe(200);
  });

  it("shows an approver of acme no approval of globex, and lets them decide none of it", async () => {
    const theirs = await check(gus, "issue_refund", { order: "g-9", amount: 901 });
    const ours = await check(alice, "issue_refund", { order: "o-10", amount: 902 });
    const { jar, csrf } = await signIn({ token: mona });
    const ids = (await ui("GET", "/ui/api/approvals", { jar })).body.approvals.map(
      (a: { id: string }) => a.id,
    );
    expect(ids).toContain(ours.approval!.id);
    expect(ids).not.toContain(theirs.approval!.id);
    const decided = await ui("POST", `/ui/api/approvals/${theirs.approval!.id}`, {
      jar,
      csrf,
      body: { decision: "approve" },
    });
    expect([decided.status, decided.body.error.code]).toEqual([404, "ERR_NOT_FOUND"]);
    const admin = await signIn({ token: ADMIN });
    const still = (await ui("GET", "/ui/api/approvals", { jar: admin.jar })).body.approvals.find(
      (a: { id: string }) => a.id === theirs.approval!.id,
    );
    expect(still.status).toBe("pending");
  });

  it("keeps the admin pages from an approver", async () => {
    const { jar } = await signIn({ token: mona });
    for (const path of ["/ui/api/health", "/ui/api/policy/tenants", "/ui/api/policy/matrix?tenant=acme"]) {
      const r = await ui("GET", path, { jar });
      expect([path, r.status, r.body.error.code]).toEqual([path, 403, "ERR_POLICY_DENIED"]);
    }
  });
});

describe("the admin's pages", () => {
  it("exports the filtered set as CSV with a header line and one line per record", async () => {
    const { jar } = await signIn({ token: ADMIN });
    const csv = await ui("GET", "/ui/api/audit/export?format=csv&user=alice&tool=get_customer", { jar });
    expect(csv.headers.get("content-type")).toMatch(/^text\/csv/);
    expect(csv.headers.get("content-disposition")).toMatch(/attachment/);
    const lines = csv.text.trimEnd().split("\r\n");
    expect(lines[0]).toMatch(/^log,seq,time,kind,tenant,user,/);
    expect(lines.length).toBeGreaterThan(1);
    for (const line of lines.slice(1)) expect(line).toMatch(/,acme,alice,.*,get_customer,/);
  });

  it("filters by reason code, which the store has no column for", async () => {
    const { jar } = await signIn({ token: ADMIN });
    const r = await ui("GET", "/ui/api/audit?reason=approval_required&kind=attempt", { jar });
    expect(r.body.records.length).toBeGreaterThan(0);
    for (const rec of r.body.records)
      expect([rec.kind, rec.reason_code]).toEqual(["attempt", "approval_required"]);
  });

  it("shows who can do what, and why, with the rules that may still ask", async () => {
    const { jar } = await signIn({ token: ADMIN });
    const m = (await ui("GET", "/ui/api/policy/matrix?tenant=acme", { jar })).body;
    expect(m.users.map((u: { user: string }) => u.user)).toContain("alice");
    const refund = m.cells.find(
      (c: { user: string; tool: string; tier: string }) =>
        c.user === "alice" && c.tool === "issue_refund" && c.tier === "interactive",
    );
    expect(refund).toMatchObject({ decision: "allow", reason_code: "ok", layer: "defaults.*" });
    expect(refund.rules).toEqual([{ id: "big-refunds", effect: "ask", when: "args.amount > 500" }]);
  });

  it("replays the tenant's last calls under a draft and lists the decisions it would change, saving nothing", async () => {
    const { jar, csrf } = await signIn({ token: ADMIN });
    const draft = {
      defaults: { "*": { permission: "allow" } },
      tools: { get_customer: { "*": { permission: "deny" } } },
    };
    const r = await ui("POST", "/ui/api/policy/whatif", {
      jar,
      csrf,
      body: { tenant: "acme", policy: draft, last: 100 },
    });
    expect(r.status).toBe(200);
    expect(r.body.replayed).toBeGreaterThan(0);
    const changed = r.body.changed.map(
      (c: { call: { tool: string }; now: { decision: string }; draft: { decision: string } }) => [
        c.call.tool,
        c.now.decision,
        c.draft.decision,
      ],
    );
    expect(changed).toContainEqual(["get_customer", "allow", "deny"]);
    // big refunds asked under the rule; the draft has no rule, so they would be allowed
    expect(changed).toContainEqual(["issue_refund", "ask", "allow"]);
    // nothing was saved: the policy in force still allows get_customer
    expect((await check(alice, "get_customer", { id: "c-2" })).decision).toBe("allow");
    const bad = await ui("POST", "/ui/api/policy/whatif", {
      jar,
      csrf,
      body: { tenant: "acme", policy: { defaults: { "*": { permission: "perhaps" } } } },
    });
    expect([bad.status, bad.body.error.code]).toEqual([400, "ERR_CONFIG_INVALID"]);
  });

  it("reports health: decisions per minute, latency, top denials, the audit log and its stores", async () => {
    const { jar } = await signIn({ token: ADMIN });
    await check(alice, "grant_permission", {});
    const h = (await ui("GET", "/ui/api/health", { jar })).body;
    expect(h.series).toHaveLength(60);
    const last = h.series[h.series.length - 1];
    expect(last.allow + last.deny + last.ask).toBeGreaterThan(0);
    expect(last.p50_ms).toBeGreaterThan(0);
    expect(h.audit).toMatchObject({ healthy: true });
    expect(h.audit.size).toBeGreaterThan(0);
    expect(h.state).toEqual({ healthy: true, problem: null });
    expect(h.top_denied_tools.map((t: { name: string }) => t.name)).toContain("grant_permission");
  });
});
