/**
 * Drive the gateway as bench/gateway.ts does, for profiling (docs/BENCHMARKS.md, gateway):
 * `node --import tsx bench/gateway-profile.ts` after `npm run build`. One session calls sequentially for `SEQ_MS`
 * (default 10 s), then 16 sessions concurrently for `CONC_MS`. Both children preload fixtures/loop-report.mjs,
 * which prints each one's event-loop delay and CPU time per phase; `GATEWAY_NODE_FLAGS` and
 * `UPSTREAM_NODE_FLAGS` add node flags (e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`).
 */
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { child, connect } from "./gateway.js";

const report = ["--import", "./bench/fixtures/loop-report.mjs"];
const flagsOf = (name: string) => [
  ...report,
  ...(process.env[name] ?? "").split(" ").filter((f) => f !== ""),
];
const flags = flagsOf("GATEWAY_NODE_FLAGS");
const upFlags = flagsOf("UPSTREAM_NODE_FLAGS");
const upstream = await child("bench/fixtures/mcp-upstream-child.ts", [], upFlags);
const gateway = await child("bench/fixtures/gateway-child.ts", [upstream.info["url"]!], flags);
const sessions: Client[] = [];
for (let i = 0; i < 16; i++)
  sessions.push(await connect(`${gateway.info["url"]}/mcp`, gateway.info["token"]));
const call = (c: Client) => c.callTool({ name: "crm.get_customer", arguments: { id: "c-1" } });
for (let i = 0; i < 300; i++) await call(sessions[0]!);
gateway.proc.kill("SIGUSR2");
upstream.proc.kill("SIGUSR2");
let end = Date.now() + Number(process.env["SEQ_MS"] ?? 10_000);
let n = 0;
const t0 = Date.now();
while (Date.now() < end) {
  await call(sessions[0]!);
  n++;
}
console.log(`sequential: ${n} calls, ${(((Date.now() - t0) * 1000) / n).toFixed(0)} µs mean`);
gateway.proc.kill("SIGUSR2");
upstream.proc.kill("SIGUSR2");
end = Date.now() + Number(process.env["CONC_MS"] ?? 10_000);
n = 0;
await Promise.all(
  sessions.map(async (s) => {
    while (Date.now() < end) {
      await call(s);
      n++;
    }
  }),
);
console.log(`16 sessions: ${(n / (Number(process.env["CONC_MS"] ?? 10_000) / 1000)).toFixed(0)} calls/s`);
gateway.proc.kill("SIGUSR2");
upstream.proc.kill("SIGUSR2");
await Promise.allSettled(sessions.map((c) => c.close()));
gateway.proc.kill("SIGTERM");
upstream.proc.kill("SIGTERM");
await new Promise((r) => gateway.proc.once("exit", r));
