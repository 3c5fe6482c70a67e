/**
 * The MCP gateway against the upstream it fronts, same run: the official MCP client calls `get_customer`
 * directly on the upstream and as `crm.get_customer` through `/mcp` (token verified, policy, OBO token minted,
 * output redacted, audited). Upstream, gateway and load generator are three processes. Latency: one session,
 * sequential calls, rounds alternating direct/gateway. Throughput: 16 sessions calling concurrently.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { UpstreamConfig } from "../src/config/server.js";
import { generateSigningKey } from "../src/identity/keys.js";
import { createOboMinter } from "../src/server/obo.js";
import { fetchWithOwnSignal, Upstream } from "../src/server/upstreams.js";
import { type Finding, fmt, medianOf, sample } from "./harness.js";

const SESSIONS = 16;

/** Start a bench child (`flags` go to its node) and read the JSON line it prints first. */
export async function child(
  script: string,
  args: string[] = [],
  flags: string[] = [],
): Promise<{ proc: ChildProcess; info: Record<string, string> }> {
  const proc = spawn(process.execPath, [...flags, "--import", "tsx", script, ...args], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const first = await createInterface({ input: proc.stdout! })[Symbol.asyncIterator]().next();
  return { proc, info: JSON.parse(String(first.value)) as Record<string, string> };
}

/** An official MCP client session on `url`, with `token` as its bearer token. */
export async function connect(url: string, token?: string): Promise<Client> {
  const client = new Client({ name: "bench-agent", version: "1.0.0" });
  const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` };
  // the SDK shares one abort signal across a connection's requests; see fetchWithOwnSignal
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers },
    fetch: fetchWithOwnSignal,
  });
  await client.connect(transport);
  return client;
}

/** Calls per second with every session calling in a loop for `ms`. */
async function throughput(sessions: Client[], tool: string, ms: number): Promise<number> {
  const end = Date.now() + ms;
  let calls = 0;
  await Promise.all(
    sessions.map(async (s, i) => {
      while (Date.now() < end) {
        const r = await s.callTool({ name: tool, arguments: { id: `c-${i}` } });
        if (r.isError === true) throw new Error(`${tool} failed: ${JSON.stringify(r.content)}`);
        calls++;
      }
    }),
  );
  return calls / (ms / 1000);
}

export async function benchGateway(): Promise<Finding[]> {
  const upstream = await child("bench/fixtures/mcp-upstream-child.ts");
  const gateway = await child("bench/fixtures/gateway-child.ts", [upstream.info["url"]!]);
  const proxy = await child("bench/fixtures/bare-proxy-child.ts", [upstream.info["url"]!]);
  const direct: Client[] = [];
  const governed: Client[] = [];
  try {
    for (let i = 0; i < SESSIONS; i++) {
      direct.push(await connect(upstream.info["url"]!));
      governed.push(await connect(`${gateway.info["url"]}/mcp`, gateway.info["token"]));
    }
    const d0 = direct[0]!;
    const g0 = governed[0]!;
    const p0 = await connect(proxy.info["url"]!);
    direct.push(p0); // closed with the others
    const call = (c: Client, name: string) => () => c.callTool({ name, arguments: { id: "c-1" } });
    const check = await g0.callTool({ name: "crm.get_customer", arguments: { id: "c-1" } });
    if (JSON.stringify(check.content).includes("078-05-1120")) throw new Error("the gateway did not redact");
    // The hop the gateway itself makes (its upstream client, OBO token and all), measured alone: the part of the
    // added latency that is a second MCP round trip rather than the gateway's own work.
    const hop = new Upstream(
      UpstreamConfig.parse({
        name: "crm",
        transport: "streamable-http",
        url: upstream.info["url"],
        auth: { type: "obo", audience: "https://crm.bench.test" },
      }),
      createOboMinter(generateSigningKey(), "https://gateway.bench.test"),
      () => {},
    );
    const added: number[] = [];
    const addedByProxy: number[] = [];
    const p50s = { direct: [] as number[], gateway: [] as number[], hop: [] as number[] };
    for (let round = 0; round < 5; round++) {
      const a = await sample("direct", call(d0, "get_customer"), 400, 100);
      const p = await sample("bare proxy", call(p0, "get_customer"), 400, 100);
      const b = await sample("gateway", call(g0, "crm.get_customer"), 400, 100);
      const c = await sample("hop", () => hop.call("get_customer", { id: "c-1" }), 400, 100);
      p50s.direct.push(a.p50);
      p50s.gateway.push(b.p50);
      p50s.hop.push(c.p50);
      added.push(b.p50 - a.p50);
      addedByProxy.push(p.p50 - a.p50);
    }
    await hop.close();
    await throughput(governed, "crm.get_customer", 1000); // warm-up
    const rates = { direct: [] as number[], gateway: [] as number[] };
    for (let round = 0; round < 3; round++) {
      rates.direct.push(await throughput(direct, "get_customer", 4000));
      rates.gateway.push(await throughput(governed, "crm.get_customer", 4000));
    }
    const addedUs = medianOf(added);
    const floorUs = medianOf(addedByProxy);
    const ratio = medianOf(rates.gateway) / medianOf(rates.direct);
    return [
      {
        what: "tools/call latency added by the gateway, one session (median of 5 rounds × 400 calls)",
        measured: `${fmt(addedUs)} µs p50 (direct ${fmt(medianOf(p50s.direct))}, gateway ${fmt(medianOf(p50s.gateway))} µs; the gateway's own hop to the upstream alone ${fmt(medianOf(p50s.hop))} µs)`,
        target: "≤ 1 ms",
        ok: addedUs <= 1000,
      },
      {
        // The same calls through a bare reverse proxy (no token, policy, audit or MCP protocol), same rounds: what a
        // second HTTP hop costs on this machine before a gateway does anything; the rest is the gateway's own work.
        what: "tools/call latency added by a bare node:http reverse proxy in the gateway's place (the machine's floor for a second hop)",
        measured: `${fmt(floorUs)} µs p50; the gateway's own work above it: ${fmt(addedUs - floorUs)} µs`,
        target: "(informational)",
        ok: true,
      },
      {
        what: `tools/call throughput through the gateway vs direct, ${SESSIONS} sessions (median of 3 × 4 s)`,
        measured: `${Math.round(medianOf(rates.gateway))} vs ${Math.round(medianOf(rates.direct))} calls/s = ${(ratio * 100).toFixed(0)}%`,
        target: "≥ 70%",
        ok: ratio >= 0.7,
      },
    ];
  } finally {
    await Promise.allSettled([...direct, ...governed].map((c) => c.close()));
    for (const c of [gateway, proxy, upstream]) c.proc.kill("SIGTERM");
  }
}
