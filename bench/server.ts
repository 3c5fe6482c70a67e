/**
 * The control plane under load: `POST /v1/check` (cached token, allowed call, audited to SQLite) against a
 * bare JSON endpoint on the same server (`POST /bench/echo`, same body), 64 connections, with autocannon.
 * The server runs in a child process; rounds alternate and the median of each is reported.
 */
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import autocannon from "autocannon";
import { type Finding, medianOf } from "./harness.js";

const body = JSON.stringify({ tool: "get_customer", args: { id: "c-1" }, agent: { name: "support-bot" } });

function load(url: string, path: string, token: string, seconds: number): Promise<autocannon.Result> {
  return autocannon({
    url: `${url}${path}`,
    method: "POST",
    connections: 64,
    duration: seconds,
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body,
  });
}

export async function benchServer(): Promise<Finding[]> {
  // The server runs from the compiled build when there is one (npm install builds it), as in production.
  const child = spawn(process.execPath, ["--import", "tsx", "bench/fixtures/server-child.ts"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  try {
    const first = await createInterface({ input: child.stdout! })[Symbol.asyncIterator]().next();
    const { url, token } = JSON.parse(String(first.value)) as { url: string; token: string };
    await load(url, "/v1/check", token, 3); // warm-up: JIT, token cache, SQLite pages
    await load(url, "/bench/echo", token, 2);
    const bare: autocannon.Result[] = [];
    const check: autocannon.Result[] = [];
    for (let round = 0; round < 3; round++) {
      bare.push(await load(url, "/bench/echo", token, 8));
      check.push(await load(url, "/v1/check", token, 8));
    }
    const rps = (rs: autocannon.Result[]) => medianOf(rs.map((r) => r.requests.average));
    const p99 = (rs: autocannon.Result[]) => medianOf(rs.map((r) => r.latency.p99));
    const errors = check.reduce((n, r) => n + r.errors + r.non2xx, 0);
    const ratio = rps(check) / rps(bare);
    return [
      {
        what: "/v1/check throughput vs a bare JSON endpoint, 64 connections (median of 3 × 8 s)",
        measured: `${Math.round(rps(check)).toLocaleString("en")} vs ${Math.round(rps(bare)).toLocaleString("en")} req/s = ${(ratio * 100).toFixed(0)}%${errors > 0 ? ` (${errors} errors)` : ""}`,
        target: "≥ 70%",
        ok: ratio >= 0.7 && errors === 0,
      },
      {
        what: "/v1/check p99 latency at 64 connections",
        measured: `${p99(check).toFixed(1)} ms (bare ${p99(bare).toFixed(1)} ms)`,
        target: "≤ 10 ms",
        ok: p99(check) <= 10,
      },
    ];
  } finally {
    child.kill("SIGTERM");
  }
}
