/**
 * The audit's guarantees as an operator would break them: two `onbehalf serve` processes on one host with the
 * same config (PostgreSQL audit, Redis limits), 64 concurrent clients, one instance killed with SIGKILL in the
 * middle of the load and started again, the audit store cut off and restored, a poisoned request among the
 * good ones. Then, from the database itself:
 *
 * - every call answered `allow` has exactly one committed attempt record, and no call has two;
 * - no record is lost or duplicated: every log verifies with its key, from its first record to its last;
 * - one human's rate limit held across both instances, within 5 %;
 * - after the outage, decisions are normal again.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { main } from "../../src/cli/commands.js";
import { DEFAULT_RESOURCE, type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { type OwnRedis, startOwnRedis } from "../support/redis-server.js";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy.js";
import { healthy, type Instance, killAll, startInstance } from "./instances.js";

const PG = process.env["ONBEHALF_TEST_PG"] ?? "postgres://postgres@127.0.0.1:5432/test";
const schema = `inv_${randomBytes(5).toString("hex")}`;
const LIMIT = 400; // the rate-limited human's calls a minute
const CLIENTS = 64;

let idp: OidcProviderHandle;
let redis: OwnRedis;
let proxy: TcpProxy;
let dir: string;

/** One config file, as an operator would copy it to two instances; no log_id (one log per process). */
function writeConfig(extra: Record<string, unknown> = {}): string {
  const config = join(dir, `onbehalf-${randomBytes(3).toString("hex")}.json`);
  writeFileSync(
    config,
    JSON.stringify({
      server: { admin_tokens: ["invariant-admin-token-0123456789"], signing_key: "./server.jwk" },
      issuers: [{ issuer: idp.issuer, audience: DEFAULT_RESOURCE, preset: "generic" }],
      tools: [{ name: "get_customer", required_scopes: ["customers:read"] }],
      tenants: [
        {
          id: "acme",
          policy: {
            defaults: { "*": { permission: "allow" } },
            users: { limited: { "*": { rate_limit_per_minute: LIMIT } } },
          },
        },
      ],
      audit: {
        store: `postgres://postgres@127.0.0.1:${proxy.port}/test?schema=${schema}`,
        signing_key: "./audit.jwk",
        flush_ms: 2,
        checkpoint_every: 500,
        ...extra,
      },
      limits: { store: redis.url },
    }),
  );
  return config;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "onbehalf-invariants-"));
  [idp, redis, proxy] = await Promise.all([startOidcProvider(), startOwnRedis(), startTcpProxy(5432)]);
});
afterAll(async () => {
  killAll();
  await Promise.allSettled([idp?.close(), redis?.stop(), proxy?.close()]);
  const client = new pg.Client(PG);
  await client.connect();
  await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await client.end();
});

interface Answer {
  readonly user: string;
  readonly status: number;
  readonly decision?: string;
  readonly reason_code?: string;
  readonly call_id?: string;
}

describe("the audit under two instances, load and faults", () => {
  it("audits every allowed call exactly once, loses nothing, holds the limit, and recovers", async () => {
    const config = writeConfig();
    const users = ["limited", "alice", "bob", "carol", "dave", "erin", "frank", "grace"];
    const tokens = new Map<string, string>();
    for (const u of users)
      tokens.set(u, await idp.getToken({ scope: "customers:read", claims: { sub: u, tenant: "acme" } }));

    // The limit is a sliding window over clock minutes: run the load inside one, so "at most LIMIT" is exact.
    const intoMinute = Date.now() % 60_000;
    if (intoMinute > 30_000) await new Promise((r) => setTimeout(r, 60_100 - intoMinute));
    let a: Instance = await startInstance(config);
    const b: Instance = await startInstance(config);
    const answers: Answer[] = [];
    let stop = false;
    let lostLimited = 0;

    const ask = async (url: string, user: string, tool = "get_customer"): Promise<Answer> => {
      const res = await fetch(`${url}/v1/check`, {
        method: "POST",
        headers: { authorization: `Bearer ${tokens.get(user)}`, "content-type": "application/json" },
        body: JSON.stringify({ tool, args: { id: randomBytes(4).toString("hex") }, agent: { name: "bot" } }),
      });
      const body = (await res.json()) as Record<string, string>;
      return { user, status: res.status, ...body };
    };
    // 64 clients; a quarter act for the rate-limited human. A client whose instance is gone tries the other.
    const client = async (i: number) => {
      const user = i % 4 === 0 ? "limited" : users[1 + (i % 7)]!;
      let n = i;
      while (!stop) {
        const url = (n++ % 2 === 0 ? a : b).url;
        try {
          answers.push(await ask(url, user));
        } catch {
          if (user === "limited") lostLimited++; // perhaps charged to the limit by the instance killed
          await new Promise((r) => setTimeout(r, 20)); // connection refused or reset: the instance is down
        }
      }
    };
    const clients = Array.from({ length: CLIENTS }, (_, i) => client(i));
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

    await sleep(1_500);
    // A poisoned request among the good ones: refused at the edge, and it wedges nothing.
    const poisoned = await fetch(`${b.url}/v1/check`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ tool: "x\u0000y", args: {}, agent: { name: "bot" } }),
    });
    expect(poisoned.status).toBe(400);

    // kill -9 one instance in the middle of the load, and start it again on the same config.
    a.child.kill("SIGKILL");
    expect((await a.exited).signal).toBe("SIGKILL");
    a = await startInstance(config);
    await sleep(1_000);

    // The audit store goes away and comes back.
    await proxy.cut();
    await sleep(1_500);
    const during = answers.length;
    await sleep(500);
    const inOutage = answers.slice(during);
    await proxy.restore();
    expect(await healthy(a.url, 15_000)).toBe(true);
    expect(await healthy(b.url, 15_000)).toBe(true);
    await sleep(300); // answers decided before the recovery have arrived by now
    const recovered = answers.length;
    await sleep(1_500);
    stop = true;
    await Promise.all(clients);

    // Stopped as an operator stops them: SIGTERM flushes the audit and signs a final checkpoint.
    a.child.kill("SIGTERM");
    b.child.kill("SIGTERM");
    expect((await a.exited).code).toBe(0);
    expect((await b.exited).code).toBe(0);

    // During the outage nothing was allowed: every answer was a fail-closed denial.
    expect(inOutage.length).toBeGreaterThan(0);
    expect(inOutage.every((x) => x.decision === "deny" && x.reason_code === "fail_closed")).toBe(true);
    // After it, decisions are normal again for everyone.
    const after = answers.slice(recovered).filter((x) => x.user !== "limited");
    expect(after.length).toBeGreaterThan(50);
    expect(after.every((x) => x.status === 200 && x.decision === "allow")).toBe(true);

    // From the database: one committed attempt record for every call answered allow, none twice.
    const db = new pg.Client(PG);
    await db.connect();
    const rows = (await db.query(`SELECT log, seq, record FROM ${schema}.audit_records`)).rows as {
      log: string;
      record: string;
    }[];
    await db.end();
    const attempts = new Map<string, { decision: string; user: string }[]>();
    for (const r of rows) {
      const rec = JSON.parse(r.record) as { kind: string; call_id: string; decision: string; user: string };
      if (rec.kind !== "attempt") continue;
      attempts.set(rec.call_id, [...(attempts.get(rec.call_id) ?? []), rec]);
    }
    const allowed = answers.filter((x) => x.decision === "allow");
    expect(allowed.length).toBeGreaterThan(1_000);
    const unrecorded = allowed.filter((x) => {
      const list = attempts.get(x.call_id!);
      return list?.length !== 1 || list[0]!.decision !== "allow";
    });
    expect(unrecorded).toEqual([]);
    expect([...attempts.entries()].filter(([, list]) => list.length !== 1)).toEqual([]);
    expect(new Set(rows.map((r) => r.log)).size).toBeGreaterThanOrEqual(2);

    // The human's limit held across both instances: never more allowed attempts on record than the limit, and
    // every slot of it accounted for: an allow on record, or a call charged and then refused (fail-closed in the
    // outage) or cut off (the instance killed under it).
    const limitedAllowed = [...attempts.values()].filter(
      ([r]) => r!.user === "limited" && r!.decision === "allow",
    ).length;
    const limitedFailClosed = answers.filter(
      (x) => x.user === "limited" && x.reason_code === "fail_closed",
    ).length;
    // The human asked for more than the limit (else "held" would prove nothing).
    expect(answers.filter((x) => x.user === "limited").length).toBeGreaterThan(LIMIT);
    expect(limitedAllowed).toBeLessThanOrEqual(LIMIT);
    expect(limitedAllowed).toBeGreaterThanOrEqual(LIMIT - limitedFailClosed - lostLimited);
    expect(answers.some((x) => x.user === "limited" && x.reason_code === "rate_limited")).toBe(true);

    // No record lost, none duplicated, nothing edited: every log verifies with its key, to its last record.
    const out: string[] = [];
    const code = await main(["audit", "verify", "--config", config], {
      out: (l) => out.push(l),
      err: (l) => out.push(l),
    });
    expect(out.join("\n")).not.toMatch(/FAIL/);
    expect(code).toBe(0);
    expect(out.filter((l) => l.startsWith("ok "))).toHaveLength(new Set(rows.map((r) => r.log)).size);
  }, 120_000);

  it("refuses to start a second instance on a log another one holds, naming the log, the holder and the fix", async () => {
    const config = writeConfig({ log_id: "shared-log" });
    const first = await startInstance(config);
    const second = await startInstance(config).catch((e: Error) => e);
    expect(second).toBeInstanceOf(Error);
    expect((second as Error).message).toMatch(
      /serve exited with 1: .*audit log shared-log is being written by another writer: onbehalf serve \(host .+, pid \d+, since .*give each instance its own audit\.log_id/s,
    );
    first.child.kill("SIGTERM");
    expect((await first.exited).code).toBe(0);
    // Once the first has stopped, the log is free again.
    const again = await startInstance(config);
    again.child.kill("SIGTERM");
    expect((await again.exited).code).toBe(0);
  }, 60_000);
});
