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
  it("starts on the example config, prints a ready token and a call to try, and flushes the audit on SIGTERM", async () => {
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
    expect(out.join("\n")).toContain(`curl -s ${url}/v1/check`);
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
    expect(await res.json()).toMatchObject({ decision: "ask", rule: "big-refunds-need-approval" });
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    const verify: string[] = [];
    expect(
      await main(["audit", "verify", "--config", config], { out: (l) => verify.push(l), err: () => {} }),
    ).toBe(0);
    expect(verify[0]).toMatch(/^ok .*: 1 records, 1 of 1 checkpoints verified/);
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
