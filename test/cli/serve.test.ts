/** `onbehalf serve` as a user runs it: a real process on the example config, a governed call, SIGTERM. */
import { spawn } from "node:child_process";
import { copyFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterEach, describe, expect, it } from "vitest";
import { main } from "../../src/cli/commands.js";

const children: ReturnType<typeof spawn>[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill("SIGKILL");
});

describe("onbehalf serve", () => {
  it("is a complete first hour: a token, an admin token, a call that asks, its approval, the demo beside it, and the audit flushed on SIGTERM", async () => {
    const dir = mkdtempSync(join(tmpdir(), "onbehalf-serve-"));
    const config = join(dir, "onbehalf.yaml");
    copyFileSync("examples/onbehalf.yaml", config);
    const child = spawn(
      process.execPath,
      ["--import", "tsx", "src/cli/main.ts", "serve", "--config", config, "--port", "0"],
      {
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    children.push(child);
    const out: string[] = [];
    const err: string[] = [];
    child.stderr!.on("data", (d) => err.push(String(d)));
    const lines = createInterface({ input: child.stdout! });
    const ready = new Promise<void>((resolve) =>
      lines.on("line", (l) => {
        out.push(l);
        if (l.startsWith("endpoints:")) resolve();
      }),
    );
    await ready;
    const url = /listening on (http:\/\/\S+)/.exec(out.join("\n"))![1]!;
    const token = /export TOKEN=(\S+)/.exec(out.join("\n"))![1]!;
    expect(out.join("\n")).toContain(`export URL=${url}`);
    // stderr is its own pipe: its lines may arrive after stdout's
    for (let i = 0; i < 100 && !err.join("").includes("dev_issuer is ON"); i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(err.join("")).toContain("dev_issuer is ON");
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
    const admin = /export ADMIN=(\S+)/.exec(out.join("\n"))![1]!;
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
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    const verify: string[] = [];
    expect(
      await main(["audit", "verify", "--config", config], { out: (l) => verify.push(l), err: () => {} }),
    ).toBe(0);
    expect(verify[0]).toMatch(/^ok .*: \d+ records, \d+ of \d+ checkpoints verified/);
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
