/**
 * The control plane under load: `POST /v1/check` (cached token, allowed call, its attempt record committed
 * before the answer; `"report": false`, the way a policy decision point asks: one request, one answer, one audit
 * record, nothing kept — a check that leaves its call waiting for a result nobody sends would measure the
 * eviction at `server.max_pending_calls` instead, which writes a second record per check once 50,000 wait; the
 * soak measures checks with their results reported) against the baseline a user compares it with, a bare fastify process with one route of the
 * same shape (parses the same JSON body, answers the very body `/v1/check` answered). Each runs in a process of
 * its own; autocannon, in this one, drives them in alternating rounds, and the median of each is reported:
 *
 * - at saturation: 64 connections, 3 rounds of 5 s each;
 * - at a fixed offered rate of 1,000 req/s (16 connections, 8 s): the tail when the server is not busy, with the
 *   event loop's delay over that round (`monitorEventLoopDelay`, read from the server process);
 *
 * with the audit in SQLite (committed on the request thread, and on a writer thread: `audit.writer_thread`) and
 * in PostgreSQL (127.0.0.1:5432, a schema of its own, dropped after).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface, type Interface } from "node:readline";
import autocannon from "autocannon";
import pg from "pg";
import { type Finding, medianOf } from "./harness.js";

const PG_URL = process.env["ONBEHALF_TEST_PG"] ?? "postgres://postgres@127.0.0.1:5432/test";
const BODY = JSON.stringify({
  tool: "get_customer",
  args: { id: "c-1" },
  agent: { name: "support-bot" },
  report: false,
});

interface Child {
  readonly process: ChildProcess;
  readonly lines: Interface;
  readonly first: Record<string, string>;
  /** The next line the child prints. */
  next(): Promise<string>;
}

async function start(script: string, env: Record<string, string> = {}): Promise<Child> {
  // ONBEHALF_BENCH_PROF=<dir>: the control plane writes a V8 CPU profile there when it stops
  const prof = process.env["ONBEHALF_BENCH_PROF"];
  const flags =
    prof !== undefined && script.includes("server-child") ? ["--cpu-prof", `--cpu-prof-dir=${prof}`] : [];
  const child = spawn(process.execPath, [...flags, "--import", "tsx", script], {
    stdio: ["pipe", "pipe", "inherit"],
    env: { ...process.env, ...env },
  });
  const lines = createInterface({ input: child.stdout! });
  const iterator = lines[Symbol.asyncIterator]();
  const next = async () => String((await iterator.next()).value);
  return { process: child, lines, first: JSON.parse(await next()), next };
}

/** Stops a child and waits for it to exit: it flushes its audit on SIGTERM, before its schema is dropped. */
async function stop(child: Child | undefined): Promise<void> {
  if (child === undefined || child.process.exitCode !== null) return;
  const exited = once(child.process, "exit");
  child.process.kill("SIGTERM");
  await exited;
}

function load(
  url: string,
  token: string,
  seconds: number,
  options: { connections: number; overallRate?: number },
): Promise<autocannon.Result> {
  return autocannon({
    url: `${url}/v1/check`,
    method: "POST",
    duration: seconds,
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: BODY,
    ...options,
  });
}

async function againstBare(store: string, env: Record<string, string>): Promise<Finding[]> {
  const onbehalf = await start("bench/fixtures/server-child.ts", env);
  const { url, token } = onbehalf.first as { url: string; token: string };
  let bare: Child | undefined;
  try {
    const answer = await fetch(`${url}/v1/check`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: BODY,
    }).then((r) => r.text());
    bare = await start("bench/fixtures/bare-fastify-child.ts", { ONBEHALF_BENCH_ANSWER: answer });
    const bareUrl = bare.first["url"] as string;
    const saturate = { connections: 64 };
    await load(url, token, 3, saturate); // warm-up: JIT, token cache, store pages
    await load(bareUrl, token, 2, saturate);
    const ours: autocannon.Result[] = [];
    const theirs: autocannon.Result[] = [];
    for (let round = 0; round < 3; round++) {
      theirs.push(await load(bareUrl, token, 5, saturate));
      ours.push(await load(url, token, 5, saturate));
    }
    const paced = { connections: 16, overallRate: 1_000 };
    const bareAtRate = await load(bareUrl, token, 8, paced);
    onbehalf.process.stdin!.write("eld\n");
    await onbehalf.next(); // the delay so far, discarded: the paced round's is what counts
    const atRate = await load(url, token, 8, paced);
    onbehalf.process.stdin!.write("eld\n");
    const delay = JSON.parse(await onbehalf.next()) as { p50: number; p99: number; max: number };
    const rps = (rs: autocannon.Result[]) => medianOf(rs.map((r) => r.requests.average));
    const errors = [...ours, atRate].reduce((n, r) => n + r.errors + r.non2xx, 0);
    const ratio = rps(ours) / rps(theirs);
    return [
      {
        what: `/v1/check vs a bare fastify process at saturation, audit in ${store} (64 connections, median of 3 × 5 s)`,
        measured: `${Math.round(rps(ours)).toLocaleString("en")} vs ${Math.round(rps(theirs)).toLocaleString("en")} req/s = ${(ratio * 100).toFixed(0)}%${errors > 0 ? ` (${errors} errors)` : ""}`,
        target: "≥ 70%",
        ok: ratio >= 0.7 && errors === 0,
      },
      {
        what: `/v1/check p99 at a fixed 1,000 req/s, audit in ${store} (bare fastify's in brackets; event-loop delay p99 / max)`,
        measured: `${atRate.latency.p99.toFixed(1)} ms (${bareAtRate.latency.p99.toFixed(1)} ms); loop ${delay.p99} / ${delay.max} ms`,
        target: "≤ 5 ms",
        ok: atRate.latency.p99 <= 5 && atRate.errors + atRate.non2xx === 0,
      },
    ];
  } finally {
    await Promise.all([stop(onbehalf), stop(bare)]);
  }
}

export async function benchServer(): Promise<Finding[]> {
  const findings = await againstBare("SQLite", {});
  findings.push(
    ...(await againstBare("SQLite committed on a writer thread", { ONBEHALF_BENCH_WRITER_THREAD: "1" })),
  );
  const client = new pg.Client({ connectionString: PG_URL });
  try {
    await client.connect();
  } catch (e) {
    findings.push({
      what: "/v1/check with the audit in PostgreSQL",
      measured: `not run: PostgreSQL at ${PG_URL} is unreachable (${(e as Error).message})`,
      target: "PostgreSQL running",
      ok: false,
    });
    return findings;
  }
  const before = new Set(
    (await client.query("select nspname from pg_namespace where nspname like 'bench_server_%'")).rows.map(
      (r: { nspname: string }) => r.nspname,
    ),
  );
  try {
    findings.push(...(await againstBare("PostgreSQL", { ONBEHALF_BENCH_PG: PG_URL })));
  } finally {
    const after = await client.query("select nspname from pg_namespace where nspname like 'bench_server_%'");
    for (const { nspname } of after.rows as { nspname: string }[]) {
      if (!before.has(nspname)) await client.query(`drop schema "${nspname}" cascade`);
    }
    await client.end();
  }
  return findings;
}
