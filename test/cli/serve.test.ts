/** `onbehalf serve` as a user runs it: a real process on the example config, a governed call, SIGTERM. */
import { spawn } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterEach, describe, expect, it } from "vitest";
import { main } from "../../src/cli/commands.js";
import { ensureConsoleBuilt } from "../support/console.js";

const children: ReturnType<typeof spawn>[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill("SIGKILL");
});

/** `onbehalf serve` on a copy of the example config (edited by `edit`), as a child process, until it is ready. */
async function serve(edit: (yaml: string) => string = (y) => y) {
  const dir = mkdtempSync(join(tmpdir(), "onbehalf-serve-"));
  const config = join(dir, "onbehalf.yaml");
  writeFileSync(config, edit(readFileSync("examples/onbehalf.yaml", "utf8")));
  const child = spawn(
    process.execPath,
    ["--import", "tsx", "src/cli/main.ts", "serve", "--config", config, "--port", "0"],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  children.push(child);
  const out: string[] = [];
  const err: string[] = [];
  child.stderr!.on("data", (d) => err.push(String(d)));
  const lines = createInterface({ input: child.stdout! });
  await new Promise<void>((resolve) =>
    lines.on("line", (l) => {
      out.push(l);
      if (l.startsWith("endpoints:")) resolve();
    }),
  );
  const printed = out.join("\n");
  const url = /listening on (http:\/\/\S+)/.exec(printed)![1]!;
  const token = /export TOKEN=(\S+)/.exec(printed)![1]!;
  const admin = /export ADMIN=(\S+)/.exec(printed)![1]!;
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { config, child, out, err, url, token, admin, exited };
}

async function until(done: () => boolean, ms = 5_000): Promise<void> {
  for (const end = Date.now() + ms; !done(); await new Promise((r) => setTimeout(r, 20))) {
    if (Date.now() > end) throw new Error("timed out waiting");
  }
}

describe("onbehalf serve", () => {
  it("is a complete first hour: a token, an admin token, a call that asks, its approval, the demo beside it, and the audit flushed on SIGTERM", async () => {
    const { config, child, out, err, url, token, admin, exited } = await serve();
    expect(out.join("\n")).toContain(`export URL=${url}`);
    // the console's address, next to the call to try; the page is there
    expect(out.join("\n")).toMatch(new RegExp(`^console: ${url}/ui \\(docs/console\\.md\\)$`, "m"));
    expect(out.join("\n")).toMatch(
      /try a governed call[\s\S]*then open the console[\s\S]*\/ui {3}\(the "Development sign-in"/,
    );
    ensureConsoleBuilt();
    const page = await fetch(`${url}/ui/`);
    expect([page.status, await page.text()]).toEqual([
      200,
      expect.stringContaining("<title>onbehalf console</title>"),
    ]);
    // stderr is its own pipe: its lines may arrive after stdout's
    await until(() => err.join("").includes("dev_issuer is ON"));
    const res = await fetch(`${url}/v1/check`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({
        tool: "issue_refund",
        args: { order: "o-1", amount: 900 },
        agent: { name: "support-bot" },
      }),
    });
    const asked = (await res.json()) as { decision: string; approval: { id: string } };
    expect(asked).toMatchObject({ decision: "ask", rule: "big-refunds-need-approval" });
    // The first hour goes on with what serve printed: the admin token approves, the call is asked again.
    expect(admin.length).toBeGreaterThanOrEqual(16);
    const auth = { authorization: `Bearer ${admin}` };
    const pending = (await (await fetch(`${url}/v1/approvals?status=pending`, { headers: auth })).json()) as {
      approvals: { id: string }[];
    };
    expect(pending.approvals.map((a) => a.id)).toEqual([asked.approval.id]);
    const approved = await fetch(`${url}/v1/approvals/${asked.approval.id}`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({ decision: "approve" }),
    });
    expect(approved.status).toBe(200);
    const again = await fetch(`${url}/v1/check`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({
        tool: "issue_refund",
        args: { order: "o-1", amount: 900 },
        agent: { name: "support-bot" },
        approval: asked.approval.id,
      }),
    });
    expect(await again.json()).toMatchObject({ decision: "allow" });
    // The demo beside the running server, on the same config: a store of its own, the server unharmed.
    const demo: string[] = [];
    expect(await main(["demo", "--config", config], { out: (l) => demo.push(l), err: () => {} })).toBe(0);
    const after = await fetch(`${url}/v1/check`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ tool: "get_customer", args: { id: "c-1" }, agent: { name: "support-bot" } }),
    });
    expect(after.status).toBe(200);
    expect(await after.json()).toMatchObject({ decision: "allow" });
    const audit = (await (await fetch(`${url}/v1/audit?limit=100`, { headers: auth })).json()) as {
      records: { user: string | null }[];
    };
    expect(audit.records.some((r) => r.user === "bob")).toBe(false); // the demo's bob is in the demo's store
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    const verify: string[] = [];
    expect(
      await main(["audit", "verify", "--config", config], { out: (l) => verify.push(l), err: () => {} }),
    ).toBe(0);
    expect(verify[0]).toMatch(/^ok .*: \d+ records, \d+ of \d+ checkpoints verified/);
  }, 30_000);

  it("reloads the file on SIGHUP, keeps the config in force when the file is bad, and ends long-polls on SIGTERM", async () => {
    const { config, child, err, url, token, admin, exited } = await serve((y) =>
      y.replace("  port: 8787\n", "  port: 8787\n  shutdown_seconds: 3\n"),
    );
    const check = async (tool: string, args: object) =>
      (await (
        await fetch(`${url}/v1/check`, {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: JSON.stringify({ tool, args, agent: { name: "support-bot" } }),
        })
      ).json()) as { decision: string; reason_code: string; approval?: { id: string } };
    const auth = { authorization: `Bearer ${admin}` };
    const liveConfig = async () =>
      (await (await fetch(`${url}/v1/admin/config`, { headers: auth })).json()) as {
        version: number;
        changed_by: string;
      };
    expect(await check("get_customer", { id: "c-1" })).toMatchObject({ decision: "allow" });

    // The operator edits the file and sends SIGHUP: the edit is in force from the next call.
    const denied = `      tools:\n        get_customer: { "*": { permission: deny } }\n`;
    writeFileSync(config, readFileSync(config, "utf8").replace("      tools:\n", denied));
    child.kill("SIGHUP");
    await until(() => err.join("").includes("reloaded"));
    expect(err.join("")).toContain(`reloaded ${config}: its tenants and tools are in force (version 1)`);
    expect(await check("get_customer", { id: "c-1" })).toMatchObject({
      decision: "deny",
      reason_code: "permission_deny",
    });
    expect(await liveConfig()).toMatchObject({ version: 1, changed_by: "file" });

    // A bad edit is refused with what is wrong, and the config in force stays.
    writeFileSync(config, readFileSync(config, "utf8").replace("get_customer: {", "get_custmer: {"));
    child.kill("SIGHUP");
    await until(() => err.join("").includes("not reloaded"));
    expect(err.join("")).toMatch(
      /not reloaded, the config in force stays: ERR_CONFIG_INVALID: .*get_custmer/s,
    );
    expect(err.join("")).toContain('did you mean "get_customer"?');
    expect(await check("get_customer", { id: "c-1" })).toMatchObject({ decision: "deny" });
    expect(await liveConfig()).toMatchObject({ version: 1 });

    // A client long-polls its approval (up to 60 s); SIGTERM answers it at once and the server exits.
    const asked = await check("issue_refund", { order: "o-1", amount: 900 });
    expect(asked.decision).toBe("ask");
    const started = Date.now();
    const poll = fetch(`${url}/v1/approvals/${asked.approval!.id}?wait=60`, { headers: auth });
    await new Promise((r) => setTimeout(r, 300));
    child.kill("SIGTERM");
    const answered = await poll;
    expect(answered.status).toBe(200);
    expect(await answered.json()).toMatchObject({ status: "pending" });
    expect(await exited).toBe(0);
    expect(Date.now() - started).toBeLessThan(3_000 + 2_000); // the shutdown bound, plus the audit's flush
    // The audit was flushed and verifies (read through the file as it was last good).
    writeFileSync(config, readFileSync(config, "utf8").replace("get_custmer: {", "get_customer: {"));
    const verify: string[] = [];
    expect(
      await main(["audit", "verify", "--config", config], { out: (l) => verify.push(l), err: () => {} }),
    ).toBe(0);
    expect(verify[0]).toMatch(/^ok /);
  }, 30_000);

  it("says clearly when the port is taken", async () => {
    const dir = mkdtempSync(join(tmpdir(), "onbehalf-serve-"));
    const config = join(dir, "onbehalf.yaml");
    copyFileSync("examples/onbehalf.yaml", config);
    const { createServer } = await import("node:net");
    const blocker = createServer().listen(0, "127.0.0.1");
    await new Promise((r) => blocker.once("listening", r));
    const port = (blocker.address() as { port: number }).port;
    const err: string[] = [];
    const code = await main(["serve", "--config", config, "--port", String(port)], {
      out: () => {},
      err: (l) => err.push(l),
    });
    blocker.close();
    expect(code).toBe(2);
    expect(err.join("\n")).toMatch(/cannot listen on 127\.0\.0\.1:\d+: .*EADDRINUSE/);
  });
});
