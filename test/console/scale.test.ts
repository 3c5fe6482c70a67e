/**
 * The explorer stays fast with 100,000 records in the store: the first page (one row per call, with each call's
 * later records) answers in under a second over HTTP and is on screen in under a second in Chromium; so do a
 * filtered page, an approver's page held to their tenant, and a rare reason read through its row bound.
 */
import { generateKeyPairSync } from "node:crypto";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openAuditLog } from "../../src/audit/log.js";
import type { AuditFields } from "../../src/audit/record.js";
import { openSqliteStore } from "../../src/audit/sqlite.js";
import type { OnbehalfServer } from "../../src/server/app.js";
import { CookieJar, ensureConsoleBuilt, launchChromium } from "../support/console.js";
import { type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { ADMIN, serverConfig, startTestServer, userToken } from "../support/server.js";

/** What the function this test runs in the page touches of the browser (it runs in Chromium, not here). */
declare const document: { querySelector(selector: string): { readonly textContent: string | null } | null };

const RECORDS = 100_000;
const BUDGET_MS = 1000;

let idp: OidcProviderHandle;
let server: OnbehalfServer;
let browser: Browser;
const figures: string[] = [];

/** A call of the seeded history: users, tools, tenants and decisions mixed, a second apart. */
function fields(i: number): AuditFields {
  const decision = i % 97 === 0 ? "ask" : i % 13 === 0 ? "deny" : "allow";
  return {
    kind: "attempt",
    time: new Date(Date.UTC(2026, 9, 1) + i * 1000).toISOString(),
    tenant: i % 4 === 0 ? "globex" : "acme",
    user: `user-${i % 500}`,
    email: null,
    agent: "support-bot",
    tier: "interactive",
    chain: ["support-bot"],
    tool: ["get_customer", "issue_refund", "read_email"][i % 3]!,
    args_digest: null,
    args: { id: `c-${i}` },
    decision,
    reason_code: decision === "ask" ? "approval_required" : decision === "deny" ? "missing_scope" : "ok",
    reason: decision === "allow" ? "allowed by defaults.*" : "seeded",
    rule: null,
    outcome: decision === "allow" ? "ok" : "none",
    trace_id: `trace-${Math.floor(i / 5)}`,
    call_id: `call-${i}`,
    latency_us: 150,
    source: "api",
    shadow: null,
  };
}

async function timed<T>(what: string, fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const started = performance.now();
  const value = await fn();
  const ms = Math.round(performance.now() - started);
  figures.push(`${what}: ${ms} ms`);
  return { value, ms };
}

async function signIn(token: string): Promise<CookieJar> {
  const jar = new CookieJar();
  const r = await fetch(`${server.url}/ui/session`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ token }),
  });
  jar.take(r.headers);
  return jar;
}

async function page(jar: CookieJar, query: string) {
  const r = await fetch(`${server.url}/ui/api/audit?${query}`, { headers: { cookie: jar.cookie! } });
  expect(r.status).toBe(200);
  return (await r.json()) as { records: { tenant: string; user: string }[]; partial: boolean };
}

beforeAll(async () => {
  ensureConsoleBuilt();
  idp = await startOidcProvider({
    scopes: ["customers:read", "orders:write", "email.read", "onbehalf:approve"],
  });
  const config = serverConfig(idp);
  const path = String(config.audit?.store).replace(/^sqlite:/, "");
  const seeded = await timed(`seeding ${RECORDS} records through the audit writer`, async () => {
    const store = openSqliteStore(path);
    const log = await openAuditLog(store, {
      logId: "seeded@history",
      flushMs: 1,
      batchSize: 2048,
      checkpoints: { key: generateKeyPairSync("ed25519").privateKey, every: 10_000, seconds: 0 },
    });
    for (let i = 1; i <= RECORDS; i++) {
      log.append(fields(i));
      if (log.congested) await log.drained();
    }
    await log.close();
    await store.close();
  });
  expect(seeded.ms).toBeGreaterThan(0);
  server = await startTestServer(idp, { audit: config.audit });
  browser = await launchChromium();
}, 120_000);
afterAll(async () => {
  await browser?.close();
  await server?.close();
  await idp?.close();
  console.log(`console with ${RECORDS} records:\n  ${figures.join("\n  ")}`);
});

describe(`the explorer with ${RECORDS} records`, () => {
  it("answers the first page, a user's page, an approver's page and a rare reason in under a second", async () => {
    const admin = await signIn(ADMIN);
    await page(admin, "kind=attempt&limit=50"); // the server's first query prepares its statements
    const first = await timed("first page (50 calls, with their later records), HTTP", () =>
      page(admin, "kind=attempt&limit=50"),
    );
    expect(first.value.records).toHaveLength(50);
    expect(first.ms).toBeLessThan(BUDGET_MS);
    const user = await timed("one user's first page, HTTP", () =>
      page(admin, "user=user-7&kind=attempt&limit=50"),
    );
    expect(user.value.records.map((r) => r.user)).toEqual(Array(50).fill("user-7"));
    expect(user.ms).toBeLessThan(BUDGET_MS);

    const approver = await signIn(await userToken(idp, "mona", "onbehalf:approve"));
    const theirs = await timed("an approver's first page (their tenant only), HTTP", () =>
      page(approver, "kind=attempt&limit=50"),
    );
    expect(new Set(theirs.value.records.map((r) => r.tenant))).toEqual(new Set(["acme"]));
    expect(theirs.ms).toBeLessThan(BUDGET_MS);

    const rare = await timed("a reason no record has (reads its row bound, 20,000), HTTP", () =>
      page(admin, "reason=rate_limited&limit=50"),
    );
    expect(rare.value).toMatchObject({ records: [], partial: true });
    expect(rare.ms).toBeLessThan(BUDGET_MS);
  });

  it("puts the first page on screen in Chromium in under a second after sign-in", async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    try {
      const p = await context.newPage();
      await p.goto(`${server.url}/ui/`);
      await p.getByLabel("Admin token or identity provider token").fill(ADMIN);
      const shown = await timed("sign-in to the first 50 rows on screen, Chromium", async () => {
        await p.getByRole("button", { name: "Sign in" }).click();
        await p.locator("table.records tbody tr").nth(49).waitFor();
      });
      expect(shown.ms).toBeLessThan(BUDGET_MS);
      const older = await timed("the next (older) page on screen, Chromium", async () => {
        const firstBefore = await p.locator("table.records tbody tr").first().textContent();
        await p.getByRole("button", { name: "Older" }).click();
        await p.waitForFunction(
          (before) => document.querySelector("table.records tbody tr")?.textContent !== before,
          firstBefore,
        );
      });
      expect(older.ms).toBeLessThan(BUDGET_MS);
    } finally {
      await context.close();
    }
  });
});
