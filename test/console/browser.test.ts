/**
 * The console end to end in a real headless Chromium against a real control plane (real OIDC provider, SQLite
 * audit): sign in; filter to a user and open a record that shows "verified"; change a byte of it in the store
 * and see "does not verify"; approve a pending call and see the waiting client proceed; an approver of one
 * tenant sees nothing of another; a what-if draft shows the decisions it would change; a change without the
 * CSRF token is refused, from the page and from another origin's form. Each page is photographed: into
 * docs/img when ONBEHALF_WRITE_SCREENSHOTS=1 (the pictures docs/console.md shows), else into a temporary folder.
 */

import { mkdtempSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { OnbehalfServer } from "../../src/server/app.js";
import { ensureConsoleBuilt, launchChromium } from "../support/console.js";
import { type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { ADMIN, call, serverConfig, startTestServer, userToken } from "../support/server.js";

/** What the functions this test runs in the page touch of the browser (they run in Chromium, not here). */
declare const location: { readonly href: string };
declare const document: {
  readonly cookie: string;
  readonly activeElement: {
    readonly tagName: string;
    readonly id: string;
    readonly textContent: string | null;
  } | null;
};
declare const localStorage: Record<string, string>;
declare const sessionStorage: Record<string, string>;

const SHOTS =
  process.env["ONBEHALF_WRITE_SCREENSHOTS"] === "1"
    ? join(import.meta.dirname, "../../docs/img")
    : mkdtempSync(join(tmpdir(), "onbehalf-console-shots-"));

let idp: OidcProviderHandle;
let server: OnbehalfServer;
let browser: Browser;
let db: string;
let alice: string;
let gus: string;
let mona: string;
const contexts: BrowserContext[] = [];

async function refund(token: string, amount: number, approval?: string) {
  return (
    await call(server.url, "POST", "/v1/check", {
      token,
      body: {
        tool: "issue_refund",
        args: { order: "o-1", amount },
        agent: { name: "support-bot" },
        ...(approval ? { approval } : {}),
      },
    })
  ).body as { decision: string; reason_code: string; approval?: { id: string; url: string } };
}

/** A fresh browser profile at the console's sign-in page. */
async function open(): Promise<Page> {
  const context = await browser.newContext({
    viewport: { width: 1280, height: 800 },
    locale: "en-GB",
    timezoneId: "UTC",
  });
  contexts.push(context);
  const page = await context.newPage();
  await page.goto(`${server.url}/ui/`);
  return page;
}

async function signIn(page: Page, token: string, shot?: string): Promise<void> {
  await page.getByLabel("Admin token or identity provider token").fill(token);
  if (shot !== undefined) await page.screenshot({ path: join(SHOTS, shot) });
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Audit" }).waitFor();
}

const rows = (page: Page) => page.locator("table.records tbody tr");

/** The element that has the keyboard focus. */
function focused(page: Page) {
  return page.evaluate(() => {
    const e = document.activeElement;
    return { tag: e?.tagName ?? "", id: e?.id ?? "", text: e?.textContent?.trim() ?? "" };
  });
}

/** Press Tab until the focused element is the one wanted (at most 60 times). */
async function tabTo(
  page: Page,
  wanted: (e: { tag: string; id: string; text: string }) => boolean,
): Promise<void> {
  for (let i = 0; i < 60; i++) {
    await page.keyboard.press("Tab");
    if (wanted(await focused(page))) return;
  }
  throw new Error("the keyboard never reached the element");
}

beforeAll(async () => {
  ensureConsoleBuilt();
  idp = await startOidcProvider({
    scopes: ["customers:read", "orders:write", "email.read", "onbehalf:approve"],
  });
  const config = serverConfig(idp);
  db = String(config.audit?.store).replace(/^sqlite:/, "");
  server = await startTestServer(idp, {
    audit: { ...config.audit, checkpoint_seconds: 0.2 },
  });
  alice = await userToken(idp, "alice", "customers:read orders:write");
  gus = await userToken(idp, "gus", "customers:read orders:write", { tenant: "globex" });
  mona = await userToken(idp, "mona", "onbehalf:approve");
  for (const [token, id] of [
    [alice, "c-1"],
    [gus, "g-1"],
    [alice, "c-2"],
  ] as const) {
    await call(server.url, "POST", "/v1/check", {
      token,
      body: { tool: "get_customer", args: { id, ssn: "078-05-1120" }, agent: { name: "support-bot" } },
    });
  }
  await refund(alice, 40);
  // a denial, for the health page: alice's token does not grant email.read
  await call(server.url, "POST", "/v1/check", {
    token: alice,
    body: { tool: "read_email", args: { mailbox: "alice@acme.test" }, agent: { name: "support-bot" } },
  });
  browser = await launchChromium();
}, 60_000);
afterAll(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  await browser?.close();
  await server?.close();
  await idp?.close();
});

describe("the console in a browser", () => {
  it("signs in, filters to a user, and shows a record verified in the browser; the token is kept nowhere the page can read", async () => {
    const page = await open();
    await signIn(page, ADMIN, "console-sign-in.png");
    await page.getByLabel("User", { exact: true }).fill("alice");
    await page.getByLabel("Tool", { exact: true }).fill("get_customer");
    await page.getByRole("button", { name: "Filter" }).click();
    await expect.poll(() => rows(page).count()).toBe(2);
    for (const text of await rows(page).allInnerTexts()) expect(text).toMatch(/alice[\s\S]*get_customer/);
    await page.screenshot({ path: join(SHOTS, "console-audit.png") });

    // the oldest of the two: c-1
    await rows(page).last().getByRole("link").click();
    const status = page.getByTestId("proof-status");
    await expect.poll(() => status.innerText(), { timeout: 15_000 }).toMatch(/^verified: /);
    await expect.poll(() => page.locator("dl.record").innerText()).toMatch(/"ssn": "\[REDACTED\]"/);
    await page.screenshot({ path: join(SHOTS, "console-record.png"), fullPage: true });

    const kept = await page.evaluate(() => ({
      cookie: document.cookie,
      storage: JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }),
      url: location.href,
    }));
    expect(kept.cookie).toBe(""); // HttpOnly: no script reads the session
    expect(kept.storage).toBe("{}{}");
    expect(kept.url).not.toContain(ADMIN);
  });

  it("shows 'does not verify' once a byte of that record is changed in the store", async () => {
    const page = await open();
    await signIn(page, ADMIN);
    await page.getByLabel("User", { exact: true }).fill("alice");
    await page.getByLabel("Tool", { exact: true }).fill("get_customer");
    await page.getByRole("button", { name: "Filter" }).click();
    await expect.poll(() => rows(page).count()).toBe(2);
    await rows(page).last().getByRole("link").click();
    await expect
      .poll(() => page.getByTestId("proof-status").innerText(), { timeout: 15_000 })
      .toMatch(/^verified/);

    const [, log, seq] = decodeURIComponent(new URL(page.url()).hash).match(/record\/(.+)\/(\d+)$/)!;
    const sqlite = new Database(db);
    try {
      const { record } = sqlite
        .prepare("SELECT record FROM audit_records WHERE log = ? AND seq = ?")
        .get(log, Number(seq)) as {
        record: string;
      };
      expect(record).toContain('"id":"c-1"');
      sqlite
        .prepare("UPDATE audit_records SET record = ? WHERE log = ? AND seq = ?")
        .run(record.replace('"id":"c-1"', '"id":"c-7"'), log, Number(seq));
    } finally {
      sqlite.close();
    }
    await page.reload();
    await expect
      .poll(() => page.getByTestId("proof-status").innerText(), { timeout: 15_000 })
      .toMatch(/^does not verify: the record and its proof lead to another root/);
    await page.screenshot({ path: join(SHOTS, "console-record-tampered.png") });
  });

  it("approves a pending call from the inbox, and the waiting client proceeds", async () => {
    const asked = await refund(alice, 900);
    expect(asked).toMatchObject({ decision: "ask", reason_code: "approval_required" });
    // the client waits for a human (long-poll)
    const waiting = call(server.url, "GET", `${asked.approval!.url}?wait=30`, { token: alice });

    const page = await open();
    await signIn(page, ADMIN);
    await page.getByRole("link", { name: "Approvals" }).click();
    const card = page.getByRole("article", { name: "issue_refund for alice" });
    await card.waitFor();
    expect(await card.innerText()).toMatch(
      /support-bot[\s\S]*big-refunds[\s\S]*"amount": 900[\s\S]*Time left\s+\d+ min \d+ s/,
    );
    await card.getByLabel("Note (kept in the audit)").fill("known customer");
    await page.screenshot({ path: join(SHOTS, "console-approvals.png") });
    await card.getByRole("button", { name: "Approve" }).click();
    await page.getByRole("status").filter({ hasText: "Approved: issue_refund for alice" }).waitFor();

    const decided = await waiting;
    expect(decided.body).toMatchObject({
      status: "approved",
      decided_by: expect.stringMatching(/^admin:/),
      note: "known customer",
    });
    expect(await refund(alice, 900, asked.approval!.id)).toMatchObject({
      decision: "allow",
      reason_code: "ok",
    });
    const trail = (
      await call(server.url, "GET", "/v1/audit?user=alice&tool=issue_refund&limit=20", { token: ADMIN })
    ).body.records;
    expect(
      trail.some((r: { kind: string; decision: string }) => r.kind === "approval" && r.decision === "allow"),
    ).toBe(true);
  });

  it("shows an approver of acme nothing of globex: not in the audit, not in the inbox, not by address", async () => {
    const theirs = await refund(gus, 950);
    const ours = await refund(alice, 990);
    const page = await open();
    await signIn(page, mona);
    await expect.poll(() => rows(page).count()).toBeGreaterThan(0);
    const tenants = await page.locator("table.records tbody tr td:nth-child(2)").allInnerTexts();
    expect(new Set(tenants)).toEqual(new Set(["acme"]));
    expect(await page.locator("table.records").innerText()).not.toMatch(/gus|globex/);
    await expect
      .poll(() => page.getByRole("navigation", { name: "Console pages" }).innerText())
      .not.toMatch(/Health|Who can do what/);
    await page.screenshot({ path: join(SHOTS, "console-approver-audit.png") });

    await page.getByRole("link", { name: "Approvals" }).click();
    await page.getByRole("article", { name: "issue_refund for alice" }).first().waitFor();
    expect(await page.locator("main").innerText()).not.toMatch(/gus|globex/);
    // asked by address, from the signed-in page itself: refused by the server
    const probes = await page.evaluate(
      async ([id]) => {
        const me = (await (await fetch("/ui/api/me")).json()) as { csrf: string };
        const headers = { "content-type": "application/json", "x-csrf-token": me.csrf };
        return [
          (await fetch("/ui/api/audit?tenant=globex")).status,
          ((await (await fetch("/ui/api/audit?user=gus")).json()) as { records: unknown[] }).records.length,
          (
            await fetch(`/ui/api/approvals/${id}`, {
              method: "POST",
              headers,
              body: '{"decision":"approve"}',
            })
          ).status,
        ];
      },
      [theirs.approval!.id],
    );
    expect(probes).toEqual([403, 0, 404]);
    expect(ours.approval).toBeDefined();
  });

  it("shows who can do what, and a what-if draft with the decisions it would change, saving nothing", async () => {
    const page = await open();
    await signIn(page, ADMIN);
    await page.getByRole("link", { name: "Who can do what" }).click();
    const matrix = page.locator("table.matrix");
    await matrix.waitFor();
    expect(await matrix.getByRole("row").filter({ hasText: "alice" }).innerText()).toMatch(
      /allow[\s\S]*may ask \(big-refunds\)/,
    );
    await page.screenshot({ path: join(SHOTS, "console-access.png"), fullPage: true });

    const draft = {
      defaults: { "*": { permission: "allow" } },
      tools: { get_customer: { "*": { permission: "deny" } } },
    };
    await page.getByLabel("Draft policy of acme").fill(JSON.stringify(draft, null, 2));
    await page.getByRole("button", { name: "Replay" }).click();
    const result = page.getByTestId("whatif-result");
    await expect
      .poll(() => result.innerText())
      .toMatch(/^[1-9]\d* of \d+ replayed calls would be decided differently/);
    expect(await result.locator("tbody tr").filter({ hasText: "get_customer" }).first().innerText()).toMatch(
      /allow[\s\S]*deny/,
    );
    await result.scrollIntoViewIfNeeded();
    await page.screenshot({ path: join(SHOTS, "console-whatif.png"), fullPage: true });
    const still = await call(server.url, "POST", "/v1/check", {
      token: alice,
      body: { tool: "get_customer", args: { id: "c-3" }, agent: { name: "support-bot" } },
    });
    expect(still.body.decision).toBe("allow");
  });

  it("shows health with its charts", async () => {
    const page = await open();
    await signIn(page, ADMIN);
    await page.getByRole("link", { name: "Health" }).click();
    await page.getByRole("heading", { name: "Health" }).waitFor();
    await expect.poll(() => page.locator("figure.chart canvas").count()).toBe(2);
    expect(await page.locator("main").innerText()).toMatch(
      /Audit log[\s\S]*records[\s\S]*Last checkpoint: \d+ records[\s\S]*Most denied tools\s+read_email\s+1/,
    );
    await page.screenshot({ path: join(SHOTS, "console-health.png"), fullPage: true });
  });

  it("works with the keyboard alone: sign in, reach the inbox, approve with a note", async () => {
    const asked = await refund(alice, 640);
    const id = asked.approval!.id;
    const page = await open();
    await tabTo(page, (e) => e.id === "token");
    await page.keyboard.type(ADMIN);
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Audit" }).waitFor();
    await tabTo(page, (e) => e.tag === "A" && e.text === "Approvals");
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Approvals" }).waitFor();
    await page.locator(`#note-${id}`).waitFor();
    await tabTo(page, (e) => e.id === `note-${id}`);
    await page.keyboard.type("approved from the keyboard");
    await page.keyboard.press("Tab");
    expect(await focused(page)).toMatchObject({ tag: "BUTTON", text: "Approve" });
    await page.keyboard.press("Enter");
    await page.getByRole("status").filter({ hasText: "Approved: issue_refund for alice" }).waitFor();
    const decided = await call(server.url, "GET", `/v1/approvals/${id}`, { token: ADMIN });
    expect(decided.body).toMatchObject({ status: "approved", note: "approved from the keyboard" });
  });

  it("refuses a change without the CSRF token, from the console's page and from another origin's form", async () => {
    const asked = await refund(alice, 777);
    const page = await open();
    await signIn(page, ADMIN);
    const bare = await page.evaluate(async (id) => {
      const r = await fetch(`/ui/api/approvals/${id}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: '{"decision":"approve"}',
      });
      return [r.status, ((await r.json()) as { error: { code: string } }).error.code];
    }, asked.approval!.id);
    expect(bare).toEqual([403, "ERR_CSRF"]);

    // A page of another origin (another port of this host: the same site, so the cookie goes along) posts a form.
    const evil: Server = createServer((_req, res) => {
      res.setHeader("content-type", "text/html");
      res.end(
        `<form id="f" method="POST" action="${server.url}/ui/api/approvals/${asked.approval!.id}">` +
          `<input name="decision" value="approve"></form><script>document.getElementById("f").submit()</script>`,
      );
    });
    await new Promise<void>((resolve) => evil.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = evil.address() as { port: number };
      const answered = page.waitForResponse((r) =>
        r.url().includes(`/ui/api/approvals/${asked.approval!.id}`),
      );
      await page.goto(`http://127.0.0.1:${port}/`);
      const r = await answered;
      expect([r.status(), ((await r.json()) as { error: { code: string } }).error.code]).toEqual([
        403,
        "ERR_CSRF",
      ]);
    } finally {
      evil.close();
    }
    const still = await call(server.url, "GET", `/v1/approvals/${asked.approval!.id}`, { token: ADMIN });
    expect(still.body.status).toBe("pending");
  });
});
