/**
 * The Python client (clients/python) against a local control plane, with a raw kept-alive request as the floor
 * (issue 21). The control plane runs in a child process (bench/fixtures/server-child.ts); bench/python/bench.py
 * times the client and the floor in the same run, in rounds, and prints medians; this turns them into findings.
 */
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import type { Finding } from "./harness.js";
import { fmt } from "./harness.js";

interface Figure {
  readonly p50_us: number;
  readonly per_s: number;
}
interface Series {
  readonly floor: Figure;
  readonly check: Figure;
  readonly governed: Figure;
  readonly governed_burst: Figure;
  readonly governed_sync: Figure;
  readonly floor_two: Figure;
  readonly urllib_check?: Figure;
  readonly one_connections: number;
  readonly one_calls: number;
  readonly two_connections: number;
  readonly two_calls: number;
  readonly proxy_handshakes?: number;
  /** Ratios to the floor measured call by call in turn with it (medians of the rounds'). */
  readonly paired: { readonly check: number; readonly governed: number; readonly governed_burst: number };
  /** Result requests of the back-to-back series (batches), and the reports they carried. */
  readonly report_requests: number;
  readonly reports: number;
}
interface Result {
  readonly rounds: number;
  readonly calls: number;
  readonly plain: Series;
  readonly tls: Series;
}

function python(args: string[]): Promise<string> {
  return new Promise((done, fail) => {
    const child = spawn(process.env["ONBEHALF_TEST_PYTHON"] ?? "python3", args, {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (b: Buffer) => {
      out += b.toString();
    });
    child.stderr.on("data", (b: Buffer) => {
      err += b.toString();
    });
    child.on("error", fail);
    child.on("close", (code) =>
      code === 0 ? done(out) : fail(new Error(`bench/python/bench.py exited ${code}: ${err.slice(-2000)}`)),
    );
  });
}

const ratio = (a: Figure, floor: Figure) => a.p50_us / floor.p50_us;
/** A median against the floor's, and the rates (left out where the series is paced: its rate counts the pauses). */
const line = (a: Figure, floor: Figure, rate = true) =>
  `${fmt(a.p50_us)} µs vs ${fmt(floor.p50_us)} µs = ${ratio(a, floor).toFixed(2)}×` +
  (rate ? ` (${Math.round(a.per_s)} vs ${Math.round(floor.per_s)} calls/s)` : "");

export async function benchPython(): Promise<Finding[]> {
  const child = spawn(process.execPath, ["--import", "tsx", "bench/fixtures/server-child.ts"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  try {
    const first = await createInterface({ input: child.stdout! })[Symbol.asyncIterator]().next();
    const { url, token } = JSON.parse(String(first.value)) as { url: string; token: string };
    const r = JSON.parse(await python(["bench/python/bench.py", url, token])) as Result;
    const { plain, tls } = r;
    const runs = `median of ${r.rounds} rounds × ${r.calls} calls`;
    const findings: Finding[] = [
      {
        what: `client.check() vs one raw kept-alive POST /v1/check of the same body ("report": "token"), in turn call by call (${runs})`,
        measured: `${plain.paired.check.toFixed(2)}× (in blocks: ${line(plain.check, plain.floor)})`,
        target: "≤ 1.2×",
        ok: plain.paired.check <= 1.2,
      },
      {
        what: "@governed, output not transformed (one round trip, report in the background), paced as an agent's calls",
        measured: `${plain.paired.governed.toFixed(2)}× (in blocks: ${line(plain.governed, plain.floor, false)})`,
        target: "≤ 1.3×",
        ok: plain.paired.governed <= 1.3,
      },
      {
        what: "@governed back to back (no pause; reports batched, POST /v1/calls/results), to the floor blocks just before and after",
        measured:
          `${plain.paired.governed_burst.toFixed(2)}× (in blocks: ${line(plain.governed_burst, plain.floor)}; ` +
          `${plain.reports} reports in ${plain.report_requests} requests)`,
        target: "≤ 1.3×",
        ok: plain.paired.governed_burst <= 1.3,
      },
      {
        what: "@governed with every report in the caller's thread (two round trips, as when output is redacted)",
        measured: `${line(plain.governed_sync, plain.floor)}; raw check + result: ${fmt(plain.floor_two.p50_us)} µs`,
        target: "reference",
        ok: true,
      },
      {
        what: "HTTPS (a TLS stand-in with a test CA): TLS handshakes each client made",
        measured: `${tls.one_connections} for ${tls.one_calls} calls with background reports (the caller's connection and the reporter's), ${tls.two_connections} for ${tls.two_calls} calls reporting in the caller's thread`,
        target: "no handshake per call after the first",
        ok: tls.one_connections <= 2 && tls.two_connections === 1,
      },
      {
        what: "HTTPS: client.check() and @governed (paced) vs a raw kept-alive HTTPS POST /v1/check",
        measured: `check ${tls.paired.check.toFixed(2)}×, @governed ${tls.paired.governed.toFixed(2)}× in turn call by call; in blocks check ${line(tls.check, tls.floor)}`,
        target: "reference",
        ok: true,
      },
    ];
    if (plain.urllib_check !== undefined) {
      findings.push({
        what: "before issue 21: check with urllib, a new connection per request",
        measured: line(plain.urllib_check, plain.floor),
        target: "reference",
        ok: true,
      });
    }
    return findings;
  } finally {
    child.kill("SIGTERM");
  }
}
