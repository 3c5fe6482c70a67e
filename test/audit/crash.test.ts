/**
 * Durability with a real child process: kill -9 in the middle of heavy writing loses nothing that was
 * acknowledged, and the log still verifies; SIGTERM flushes everything that was appended.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterEach, describe, expect, it } from "vitest";
import { openAuditLog } from "../../src/audit/log.js";
import { openSqliteStore } from "../../src/audit/sqlite.js";
import { main } from "../../src/cli/commands.js";

function setup() {
  const dir = mkdtempSync(join(tmpdir(), "onbehalf-crash-"));
  const config = join(dir, "onbehalf.yaml");
  writeFileSync(
    config,
    [
      "tools: [{ name: lookup, required_scopes: [lookup] }]",
      "tenants: [{ id: acme, policy: { defaults: { '*': { permission: allow } } } }]",
      "audit: { store: 'sqlite:./audit.db', log_id: crash-test, checkpoint_every: 1000, signing_key: ./audit.jwk }",
    ].join("\n"),
  );
  return { dir, config, db: join(dir, "audit.db") };
}

const children = new Set<ChildProcess>();
// A child left running (a failed or timed-out test) would write to its database for ever: always kill it.
afterEach(() => {
  for (const child of children)
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  children.clear();
});

function start(config: string, ...args: string[]): { child: ChildProcess; lines: AsyncIterator<string> } {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", "test/fixtures/audit-writer.ts", config, ...args],
    {
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  children.add(child);
  return { child, lines: createInterface({ input: child.stdout! })[Symbol.asyncIterator]() };
}

async function until(lines: AsyncIterator<string>, stop: (line: string) => boolean): Promise<string[]> {
  const seen: string[] = [];
  for (;;) {
    const { value, done } = await lines.next();
    if (done) return seen;
    seen.push(value);
    if (stop(value)) return seen;
  }
}

const exited = (child: ChildProcess) =>
  new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );

async function verifyCli(config: string): Promise<{ code: number; out: string }> {
  const out: string[] = [];
  const code = await main(["audit", "verify", "--config", config], {
    out: (l) => out.push(l),
    err: (l) => out.push(l),
  });
  return { code, out: out.join("\n") };
}

describe("audit durability", () => {
  it("keeps every acknowledged record through kill -9 mid-write, and the log verifies after a restart", async () => {
    const { config, db } = setup();
    const { child, lines } = start(config);
    let acked = 0;
    await until(lines, (line) => {
      if (line.startsWith("ack ")) acked = Number(line.slice(4));
      return acked >= 6000;
    });
    const done = exited(child);
    child.kill("SIGKILL");
    expect((await done).signal).toBe("SIGKILL");

    const store = openSqliteStore(db);
    const head = await store.head("crash-test");
    expect(head!.seq).toBeGreaterThanOrEqual(acked);
    const signedBefore = (await store.latestCheckpoint("crash-test"))?.size ?? 0;
    const seqs = (await store.rows("crash-test", 1, head!.seq)).map((r) => r.seq);
    expect(seqs).toEqual(Array.from({ length: head!.seq }, (_, i) => i + 1));
    // The writer restarts where the log ends and keeps the chain and the tree going.
    const { loadOrCreateSigningKey } = await import("../../src/identity/keys.js");
    const log = await openAuditLog(store, {
      logId: "crash-test",
      checkpoints: {
        key: loadOrCreateSigningKey(join(config, "../audit.jwk")).privateKey,
        every: 1000,
        seconds: 0,
      },
    });
    expect(log.treeSize).toBe(head!.seq);
    // Records after the last checkpoint were left by the killed writer (its claim is still there): they are
    // checked and signed from now on, and the log says so.
    if (signedBefore < head!.seq) {
      expect(log.resumed).toMatchObject({
        from: signedBefore + 1,
        to: head!.seq,
        previous: { pid: child.pid },
      });
    } else {
      expect(log.resumed).toBeNull();
    }
    await log.close();
    await store.close();

    const verified = await verifyCli(config);
    expect(verified.out).toMatch(/^ok {4}crash-test: \d+ records, \d+ of \d+ checkpoints verified/);
    expect(verified.code).toBe(0);
  }, 60_000);

  it("flushes everything on SIGTERM", async () => {
    const { config, db } = setup();
    const { child, lines } = start(config, "--signals");
    await until(lines, (line) => line.startsWith("ack ") && Number(line.slice(4)) >= 2000);
    const done = exited(child);
    child.kill("SIGTERM");
    expect(await done).toEqual({ code: 0, signal: null });
    const store = openSqliteStore(db);
    const head = await store.head("crash-test");
    const last = await store.latestCheckpoint("crash-test");
    expect(last!.size).toBe(head!.seq); // the final checkpoint covers everything written
    // every governed call wrote an attempt and an outcome: nothing half-written
    const rows = await store.rows("crash-test", head!.seq - 1, 2);
    expect(rows.map((r) => JSON.parse(r.canonical).kind)).toEqual(["attempt", "outcome"]);
    await store.close();
    expect((await verifyCli(config)).code).toBe(0);
  }, 60_000);
});
