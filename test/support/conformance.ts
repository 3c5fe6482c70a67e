/**
 * The official MCP conformance suite (`@modelcontextprotocol/conformance`, a devDependency) run as its README
 * says, `conformance server --url <url>`, with every server scenario (`--suite all`). Its CLI needs Node 22+
 * (it imports `fs.globSync`): on an older Node the tests run it with the current LTS that `.ci/lts-node` keeps
 * (fetched from the npm registry at a pinned version and integrity by `npm test`'s `pretest`).
 */
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export interface Check {
  readonly id: string;
  readonly status: "SUCCESS" | "FAILURE" | "WARNING" | "INFO" | "SKIPPED";
  readonly errorMessage?: string;
}

const repo = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** A Node that runs the suite's CLI: this one from 22 on, else the LTS `.ci/lts-node` keeps. */
export function conformanceNode(): string {
  if (Number(process.versions.node.split(".")[0]) >= 22) return process.execPath;
  return execFileSync(join(repo, ".ci", "lts-node"), { encoding: "utf8" }).trim();
}

/** The suite's CLI entry point, as installed. */
function cli(): string {
  const require = createRequire(import.meta.url);
  return join(dirname(require.resolve("@modelcontextprotocol/conformance/package.json")), "dist", "index.js");
}

/** Runs every server scenario against `url`; the checks of each scenario, by scenario name. */
export async function runServerScenarios(url: string): Promise<Map<string, Check[]>> {
  const out = mkdtempSync(join(tmpdir(), "onbehalf-conformance-"));
  await new Promise<void>((resolve, reject) =>
    // The CLI exits 1 when a scenario fails: the checks it wrote say which, so that is not an error here.
    execFile(
      conformanceNode(),
      [cli(), "server", "--suite", "all", "--url", url, "--output-dir", out],
      { cwd: out, timeout: 180_000, maxBuffer: 16 * 1024 * 1024 },
      (error) => (error !== null && error.code !== 1 ? reject(error) : resolve()),
    ),
  );
  const results = new Map<string, Check[]>();
  for (const dir of readdirSync(out)) {
    // server-<scenario>-<ISO timestamp with - for :>
    const scenario = dir.replace(/^server-/, "").replace(/-\d{4}-\d{2}-\d{2}T[\d-]+Z$/, "");
    results.set(scenario, JSON.parse(readFileSync(join(out, dir, "checks.json"), "utf8")) as Check[]);
  }
  return results;
}

/** The names of the scenarios the suite has for servers, from `conformance list`. */
export function serverScenarioNames(): string[] {
  const listing = execFileSync(conformanceNode(), [cli(), "list"], { encoding: "utf8" });
  const server = listing.split(/\n\s*\n/).find((block) => block.startsWith("Server scenarios")) ?? "";
  return [...server.matchAll(/^\s+- ([a-z0-9-]+)/gm)].map((m) => m[1] as string);
}
