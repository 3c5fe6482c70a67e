/**
 * `npm run bench`: every hot path against a baseline measured in the same run. Prints medians, tails and
 * ratios with the targets from the issues; docs/BENCHMARKS.md records the method and the figures.
 * Run a subset with `npm run bench -- govern identity`. The soak (20 minutes) runs only when named:
 * `npm run bench -- soak`.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { benchAdapters } from "./adapters.js";
import { benchAgentDojo } from "./agentdojo.js";
import { benchAudit } from "./audit.js";
import { benchGateway } from "./gateway.js";
import { benchGovern, benchMemory } from "./govern.js";
import { type Finding, printFindings } from "./harness.js";
import { benchIdentity } from "./identity.js";
import { benchPython } from "./python.js";
import { benchServer } from "./server.js";
import { benchSoak } from "./soak.js";

const suites: Record<string, { title: string; run: () => Promise<Finding[]> }> = {
  identity: { title: "Token verification (identity)", run: benchIdentity },
  govern: {
    title: "Governed call in-process (context, policy, rate limit, audit enqueue)",
    run: benchGovern,
  },
  audit: { title: "Audit (hot path, group commit, verify, query)", run: benchAudit },
  memory: { title: "Memory", run: () => benchMemory() },
  server: { title: "Control plane under load (HTTP)", run: benchServer },
  gateway: { title: "MCP gateway (tools/call vs the upstream direct)", run: benchGateway },
  adapters: { title: "Framework adapters (overhead over gov.governed)", run: benchAdapters },
  agentdojo: { title: "AgentDojo replay under task-scoped capabilities", run: benchAgentDojo },
  python: { title: "Python client (clients/python) against a local control plane", run: benchPython },
  soak: { title: "Soak: memory and throughput flat under load (issue 22)", run: benchSoak },
};
/** Suites long enough to run only when named. */
const OPT_IN = new Set(["soak"]);

// Stores of a million records are made here: every suite, and every server it starts (they inherit TMPDIR),
// writes in one folder, removed when the run ends.
const scratch = mkdtempSync(join(tmpdir(), "onbehalf-bench-run-"));
process.env["TMPDIR"] = scratch;
process.on("exit", () => rmSync(scratch, { recursive: true, force: true }));
process.on("SIGINT", () => process.exit(130));
process.on("SIGTERM", () => process.exit(143));

const wanted = process.argv.slice(2);
console.log(`onbehalf bench — node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? "cpu"}`);
let missed = 0;
for (const [name, suite] of Object.entries(suites)) {
  if (wanted.length > 0 ? !wanted.includes(name) : OPT_IN.has(name)) continue;
  const findings = await suite.run();
  missed += findings.filter((f) => !f.ok).length;
  printFindings(suite.title, findings);
}
console.log(`\n${missed === 0 ? "all targets met" : `${missed} target(s) missed`}`);
