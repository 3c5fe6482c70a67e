import { createPublicKey } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { parseVerifierKey, verifyCheckpoint } from "../../src/audit/checkpoint.js";
import { exportAudit } from "../../src/audit/export.js";
import { verifyInclusion } from "../../src/audit/merkle.js";
import { verifyAudit } from "../../src/audit/verify.js";
import type { Io } from "../../src/cli/args.js";
import { main } from "../../src/cli/commands.js";
import { auditKeyPath, openAuditStore } from "../../src/govern/bootstrap.js";
import { loadConfigFile } from "../../src/govern/config.js";
import { loadSigningKey } from "../../src/identity/keys.js";

async function cli(...argv: string[]) {
  return cliOn({}, ...argv);
}

/** Run the CLI with a terminal (or not) behind stderr, and stdout said to be one (or not). */
async function cliOn(tty: Pick<Io, "terminal" | "outIsTTY">, ...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, { out: (l) => out.push(l), err: (l) => err.push(l), ...tty });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

/** A stand-in for stderr: a terminal (or a pipe) that keeps what is drawn on it. */
function fakeStderr(isTTY: boolean) {
  const writes: string[] = [];
  return { isTTY, columns: 120, write: (chunk: string) => writes.push(chunk) > 0, writes };
}

/** The command line of `audit export` in `format`. */
const exportOf = (config: string, format: string) => [
  "audit",
  "export",
  "--config",
  config,
  "--format",
  format,
];

/** The frames of a progress bar as text: what was drawn, without the escape sequences that move the cursor. */
function frames(writes: readonly string[]): string[] {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the escape sequences are what is removed
  const plain = writes.join("").replace(/\x1b(?:\[[0-9;?]*[A-Za-z]|[78])/g, "\n");
  return plain.split("\n").filter((l) => l.trim() !== "");
}

/** A config with the dev issuer whose audit store is the demo's own (beside the config), filled by the demo. */
async function auditedConfig() {
  const dir = mkdtempSync(join(tmpdir(), "onbehalf-audit-cli-"));
  const config = join(dir, "onbehalf.yaml");
  const example = readFileSync("examples/onbehalf.yaml", "utf8");
  writeFileSync(
    config,
    example.replace(
      'store: "sqlite:./onbehalf.db"',
      'store: "sqlite:./onbehalf-demo.db"\n  log_id: cli-test\n  checkpoint_every: 4',
    ),
  );
  expect((await cli("demo", "--config", config)).code).toBe(0);
  return { config, db: join(dir, "onbehalf-demo.db") };
}

describe("onbehalf audit", () => {
  it("queries as a table, and as JSON for scripts", async () => {
    const { config } = await auditedConfig();
    const table = await cli("audit", "query", "--config", config, "--user", "alice", "--decision", "deny");
    expect(table.out.split("\n")[0]).toMatch(/^time +record +user +chain +tool +decision +outcome$/);
    expect(table.out).toContain("support-bot>billing-specialist  get_customer");
    const json = JSON.parse(
      (await cli("audit", "query", "--config", config, "--tool", "grant_permission", "--json")).out,
    );
    expect(json.records.map((r: { user: string }) => r.user).sort()).toEqual(["alice", "bob", "bob"]);
    expect((await cli("audit", "query", "--config", config, "--since", "not a time")).code).toBe(2);
    // One run's records, by its trace id: the demo runs each human's session as one run.
    const all = JSON.parse(
      (await cli("audit", "query", "--config", config, "--json", "--limit", "1000")).out,
    );
    const trace = all.records.find((r: { user: string }) => r.user === "alice").trace_id as string;
    expect(trace).toMatch(/^[0-9a-f]{32}$/);
    const run = JSON.parse((await cli("audit", "query", "--config", config, "--trace", trace, "--json")).out);
    expect(run.records.length).toBeGreaterThan(1);
    expect(
      run.records.every(
        (r: { trace_id: string; user: string }) => r.trace_id === trace && r.user === "alice",
      ),
    ).toBe(true);
    expect(run.records.length).toBe(
      all.records.filter((r: { trace_id: string }) => r.trace_id === trace).length,
    );
  });

  it("verifies (exit 0), and names the first bad record after tampering (exit 1)", async () => {
    const { config, db } = await auditedConfig();
    const ok = await cli("audit", "verify", "--config", config);
    expect(ok.code).toBe(0);
    expect(ok.out).toMatch(/^ok {4}cli-test: 10 records, (\d+) of \1 checkpoints verified/);
    const sqlite = new Database(db);
    sqlite
      .prepare(
        "UPDATE audit_records SET record = replace(record, '\"refunded\"', '\"refundet\"') WHERE seq = 4",
      )
      .run();
    sqlite.prepare("UPDATE audit_records SET record = replace(record, 'o-7', 'o-9') WHERE seq = 3").run();
    sqlite.close();
    const bad = await cli("audit", "verify", "--config", config);
    expect(bad.code).toBe(1);
    expect(bad.out).toBe(
      "FAIL  cli-test: seq 3: edited: record 3 does not match its leaf hash: it was edited",
    );
  });

  it("proves inclusion against a checkpoint an auditor checks with the verifier key alone", async () => {
    const { config } = await auditedConfig();
    const key = (await cli("audit", "key", "--config", config)).out.trim();
    expect(key).toMatch(/^cli-test\+[0-9a-f]{8}\+[A-Za-z0-9+/]+=*$/);
    const proof = JSON.parse((await cli("audit", "proof", "5", "--config", config)).out);
    const head = verifyCheckpoint(proof.checkpoint, parseVerifierKey(key));
    verifyInclusion(
      proof.leaf_index,
      proof.tree_size,
      Buffer.from(proof.record.leaf_hash, "hex"),
      proof.proof.map((p: string) => Buffer.from(p, "base64")),
      head.root,
    );
    expect(proof.record.seq).toBe(5);
    const wrongKey = await cli(
      "audit",
      "verify",
      "--config",
      config,
      "--key",
      key.replace("cli-test", "other"),
    );
    expect(wrongKey.code).toBe(2); // the key id no longer matches its name: bad usage
  });

  it("exports JSON lines and OpenTelemetry records", async () => {
    const { config } = await auditedConfig();
    const jsonl = await cli("audit", "export", "--config", config, "--format", "jsonl");
    expect(jsonl.out.split("\n").map((l) => JSON.parse(l).seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(jsonl.err).toBe("exported 10 records");
    const otel = await cli("audit", "export", "--config", config, "--format", "otel");
    expect(JSON.parse(otel.out).resourceLogs[0].scopeLogs[0].logRecords).toHaveLength(10);
    expect((await cli("audit", "export", "--config", config, "--format", "csv")).code).toBe(2);
  });

  it("draws progress on a terminal while it verifies and exports, ending at the total", async () => {
    const { config } = await auditedConfig();
    const stderr = fakeStderr(true);
    const verified = await cliOn({ terminal: stderr }, "audit", "verify", "--config", config);
    expect(verified.code).toBe(0);
    expect(verified.out).toMatch(/^ok {4}cli-test: 10 records/);
    expect(verified.err).toBe("");
    const drawn = frames(stderr.writes);
    expect(drawn[0]).toMatch(/^verifying \[.*\] \d+% \d+\/10 records$/);
    expect(drawn.at(-1)).toMatch(/^verifying \[.*\] 100% 10\/10 records$/);

    const exportErr = fakeStderr(true);
    const exported = await cliOn({ terminal: exportErr }, ...exportOf(config, "jsonl"));
    expect(exported.out.split("\n")).toHaveLength(10);
    expect(exported.err).toBe("exported 10 records");
    expect(frames(exportErr.writes).at(-1)).toMatch(/^exporting \[.*\] 100% 10\/10 records$/);
  });

  it("writes no progress where it would get in the way: stderr not a terminal, or records shown on one", async () => {
    const { config } = await auditedConfig();
    const pipe = fakeStderr(false);
    const verified = await cliOn({ terminal: pipe }, "audit", "verify", "--config", config);
    expect(verified).toMatchObject({ code: 0, err: "" });
    const exported = await cliOn({ terminal: pipe }, ...exportOf(config, "otel"));
    expect(exported).toMatchObject({ code: 0, err: "exported 10 records" });
    expect(pipe.writes).toEqual([]);
    // The records go to the terminal too: a bar would tear them apart.
    const tty = fakeStderr(true);
    await cliOn({ terminal: tty, outIsTTY: true }, ...exportOf(config, "jsonl"));
    expect(tty.writes).toEqual([]);
  });

  it("reports progress once per page read, and the pass complete at the end", async () => {
    const { config } = await auditedConfig();
    const loaded = loadConfigFile(config);
    const store = await openAuditStore(loaded);
    try {
      const key = createPublicKey(loadSigningKey(auditKeyPath(loaded)).privateKey);
      const seen: [number, number][] = [];
      const report = await verifyAudit(store, {
        keys: [key],
        pageSize: 4,
        acceptUnsigned: true,
        onProgress: (done, total) => seen.push([done, total]),
      });
      expect(report.ok).toBe(true);
      expect(seen).toEqual([
        [0, 10],
        [4, 10],
        [8, 10],
        [10, 10],
        [10, 10],
      ]);
      const exported: [number, number][] = [];
      await exportAudit(store, { format: "jsonl", onProgress: (d, t) => exported.push([d, t]) }, () => {});
      expect(exported.at(-1)).toEqual([10, 10]);
    } finally {
      await store.close();
    }
  });
});
