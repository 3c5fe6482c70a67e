/**
 * `POST /v1/audit/spool` under attack: every way a caller could write the audit through the spool (another
 * tenant's fail mode, a real call's id, oversized arguments, a chain the token does not sign, clocks that do not
 * agree), from a real server with real tokens; and the honest path, with a record made by the Python client.
 */
import { execFileSync } from "node:child_process";
import { resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newCallId } from "../../src/audit/call-id.js";
import { type AuditRecord, digestArgs } from "../../src/audit/record.js";
import type { OnbehalfServer } from "../../src/server/app.js";
import { ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE } from "../../src/server/token-exchange.js";
import { type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { startOwnRedis } from "../support/redis-server.js";
import { ACME_POLICY, call, SERVER_TOOLS, startTestServer, userToken } from "../support/server.js";

const ROOT = resolve(import.meta.dirname, "../..");
const MAX_ARGS_BYTES = 1024;
const TENANTS = [
  {
    id: "acme",
    policy: {
      ...ACME_POLICY,
      fail_mode: "fail_closed" as const,
      tools: { export_all: { "*": { permission: "deny" as const } } },
    },
  },
  { id: "openco", policy: { ...ACME_POLICY, fail_mode: "fail_open" as const } },
];

let idp: OidcProviderHandle;
let server: OnbehalfServer;
let alice: string;
let bob: string;
let erin: string;

beforeAll(async () => {
  idp = await startOidcProvider();
  server = await startTestServer(idp, {
    tools: [...SERVER_TOOLS, { name: "export_all" }],
    tenants: TENANTS,
    limits: { max_args_bytes: MAX_ARGS_BYTES },
  });
  alice = await userToken(idp, "alice");
  bob = await userToken(idp, "bob");
  erin = await userToken(idp, "erin", undefined, { tenant: "openco" });
});
afterAll(async () => {
  await server?.close();
  await idp?.close();
});

type Json = Record<string, unknown>;

const spool = (token: string, records: unknown[], url = server.url) =>
  call(url, "POST", "/v1/audit/spool", { token, body: { records } });

/** A record as a fail-open client spools it: a UUIDv7 call id made when the call was, and that time. */
function record(extra: Json = {}, at = Date.now()): Json {
  return {
    call_id: newCallId(at),
    time: new Date(at).toISOString(),
    tool: "get_customer",
    args: { id: "c-1", ssn: "078-05-1120" },
    agent: "support-bot",
    tier: "interactive",
    chain: ["support-bot"],
    decision: "allow",
    reason_code: "fail_open",
    reason: "the control plane is unreachable (connection refused); allowed by fail mode fail_open",
    outcome: "ok",
    latency_us: 1834,
    trace_id: null,
    ...extra,
  };
}

/** A record made by the Python client's own code (clients/python/onbehalf/spool.py), as it spools one. */
function pythonRecord(): Json {
  const script = [
    "import json, sys",
    "sys.path.insert(0, 'clients/python')",
    "from onbehalf.spool import make_record, uuid7",
    "print(json.dumps(make_record(call_id=uuid7(), tool='get_customer', args={'id': 'c-7', 'ssn': '078-05-1120'},",
    "  agent='support-bot', tier='interactive', chain=['support-bot'], decision='allow', reason_code='fail_open',",
    "  reason='the control plane is unreachable (connection refused); allowed by fail mode fail_open',",
    "  outcome='ok', latency_us=2051)))",
  ].join("\n");
  return JSON.parse(execFileSync("python3", ["-c", script], { cwd: ROOT, encoding: "utf8" })) as Json;
}

/** Every record the audit holds under a call id (any source, any log). */
async function stored(callId: unknown, s = server): Promise<AuditRecord[]> {
  return (await s.governor.queryAudit({ call_id: String(callId), limit: 100 })).records;
}

/** The control plane's refusals of spooled records for a user. */
async function refusals(user: string): Promise<AuditRecord[]> {
  const page = await server.governor.queryAudit({ user, decision: "deny", limit: 1000 });
  return page.records.filter((r) => r.source === "spool" && r.reason.startsWith("spooled record refused"));
}

async function metric(name: string): Promise<number> {
  const text = (await call(server.url, "GET", "/metrics")).body as string;
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line === undefined ? 0 : Number(line.split(" ")[1]);
}

const exchange = async (subject: string, actor: string): Promise<string> => {
  const r = await call(server.url, "POST", "/v1/token", {
    body: {
      grant_type: TOKEN_EXCHANGE,
      subject_token: subject,
      subject_token_type: ACCESS_TOKEN_TYPE,
      actor,
    },
  });
  expect(r.status).toBe(200);
  return r.body.access_token as string;
};

describe("the honest path", () => {
  it("stores a real fail-open record of a fail-open tenant once, as a spooled record, however often it is replayed", async () => {
    const rec = pythonRecord();
    const first = await spool(erin, [rec]);
    expect(first.status).toBe(200);
    expect(first.body).toEqual({ accepted: 1, duplicates: 0, overrides: 0, refused: [] });
    // the client crashed before deleting its spool: the same bytes again
    const again = await spool(erin, [rec]);
    expect(again.body).toEqual({ accepted: 0, duplicates: 1, overrides: 0, refused: [] });
    const rows = await stored(rec["call_id"]);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      kind: "spooled",
      source: "spool",
      user: "erin",
      tenant: "openco",
      chain: ["support-bot"],
      decision: "allow",
      reason_code: "fail_open",
      rule: null,
      outcome: "ok",
      args: { id: "c-7", ssn: "[REDACTED]" },
      args_digest: digestArgs({ id: "c-7", ssn: "078-05-1120" }).digest,
    });
    expect(rows[0]?.reason).toContain(`spooled by the client at ${rec["time"]}`);
    expect(rows[0]?.reason).not.toContain("client override");
  });

  it("stores the end of a call whose start was replayed while it still ran, and that end once", async () => {
    const started = record({ outcome: "none", latency_us: 0 }, Date.now() - 20 * 60_000);
    expect((await spool(erin, [started])).body).toMatchObject({ accepted: 1 });
    const done = { ...started, outcome: "ok", latency_us: 1_200_000_000 };
    expect((await spool(erin, [done])).body).toMatchObject({ accepted: 1, duplicates: 0, refused: [] });
    expect((await spool(erin, [done, started])).body).toMatchObject({ accepted: 0, duplicates: 2 });
    const rows = await stored(started["call_id"]);
    expect(rows.map((r) => [r.kind, r.outcome]).sort()).toEqual([
      ["spooled", "none"],
      ["spooled", "ok"],
    ]);
  });

  it("stores a client's account next to the control plane's own fail_closed answer of that call", async () => {
    // A real 503: the rate-limit store is away, the control plane answers fail_closed with a call id, and a
    // client of a fail-open tenant runs the call anyway and spools it under that call id.
    const redis = await startOwnRedis();
    const other = await startTestServer(idp, {
      tools: SERVER_TOOLS,
      tenants: [
        {
          id: "openco",
          policy: {
            fail_mode: "fail_open",
            defaults: { "*": { permission: "allow", rate_limit_per_minute: 1000 } },
          },
        },
      ],
      limits: { store: redis.url },
    });
    try {
      await redis.stop();
      const down = await call(other.url, "POST", "/v1/check", {
        token: erin,
        body: { tool: "get_customer", args: { id: "c-3" }, agent: { name: "support-bot" } },
      });
      expect(down.status).toBe(503);
      expect(down.body).toMatchObject({
        decision: "deny",
        reason_code: "fail_closed",
        fail_mode: "fail_open",
      });
      await redis.start();
      const rec = record({ call_id: down.body.call_id, args: { id: "c-3" } });
      let answer = await spool(erin, [rec], other.url);
      for (let i = 0; i < 60 && answer.status !== 200; i++) {
        await new Promise((r) => setTimeout(r, 100));
        answer = await spool(erin, [rec], other.url);
      }
      expect(answer.body).toEqual({ accepted: 1, duplicates: 0, overrides: 0, refused: [] });
      expect((await spool(erin, [rec], other.url)).body).toMatchObject({ accepted: 0, duplicates: 1 });
      const rows = await stored(down.body.call_id, other);
      expect(rows.map((r) => [r.kind, r.source, r.decision, r.reason_code]).sort()).toEqual([
        ["attempt", "api", "deny", "fail_closed"],
        ["spooled", "spool", "allow", "fail_open"],
      ]);
    } finally {
      await other.close();
      await redis.stop();
    }
  });
});

describe("forgeries", () => {
  it("stores fail_open from a fail_closed tenant as a client override: flagged, said in the reason, counted", async () => {
    // export_all is denied to everyone in acme, and acme fails closed
    const asked = await call(server.url, "POST", "/v1/check", {
      token: alice,
      body: { tool: "export_all", args: {}, agent: { name: "support-bot" } },
    });
    expect(asked.body).toMatchObject({
      decision: "deny",
      reason_code: "permission_deny",
      fail_mode: "fail_closed",
    });
    const before = await metric("onbehalf_spool_client_overrides_total");
    const rec = record({ tool: "export_all", args: { everything: true } });
    const r = await spool(alice, [rec]);
    expect(r.body).toEqual({ accepted: 1, duplicates: 0, overrides: 1, refused: [] });
    const [row] = await stored(rec["call_id"]);
    expect(row).toMatchObject({
      kind: "spooled",
      source: "spool",
      user: "alice",
      tenant: "acme",
      tool: "export_all",
      decision: "allow",
      reason_code: "fail_open",
      rule: "client_override",
    });
    expect(row?.reason).toMatch(
      /^client override: the fail mode of tenant "acme" is fail_closed, yet the client ran/,
    );
    expect(await metric("onbehalf_spool_client_overrides_total")).toBe(before + 1);
    // a fail-closed denial the client spooled is no override
    const denial = record({
      tool: "export_all",
      decision: "deny",
      reason_code: "fail_closed",
      outcome: "none",
    });
    expect((await spool(alice, [denial])).body).toMatchObject({ accepted: 1, overrides: 0 });
    expect((await stored(denial["call_id"]))[0]?.rule).toBeNull();
  });

  it("refuses a record reusing the call id of a real denied call, and audits the attempt", async () => {
    const denied = await call(server.url, "POST", "/v1/check", {
      token: alice,
      body: { tool: "export_all", args: { all: 1 }, agent: { name: "support-bot" } },
    });
    expect(denied.body).toMatchObject({ decision: "deny", reason_code: "permission_deny" });
    const callId = denied.body.call_id as string;
    const r = await spool(alice, [record({ call_id: callId, tool: "export_all", args: { all: 1 } })]);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ accepted: 0, duplicates: 0 });
    expect(r.body.refused).toEqual([
      {
        index: 0,
        call_id: callId,
        code: "call_id_taken",
        reason: expect.stringContaining(
          "a call the control plane decided (api attempt: deny/permission_deny)",
        ),
      },
    ]);
    const rows = await stored(callId);
    expect(rows.map((x) => [x.kind, x.source, x.decision])).toEqual([["attempt", "api", "deny"]]);
    const audited = (await refusals("alice")).filter((x) => x.reason.includes(callId));
    expect(audited).toHaveLength(1);
    expect(audited[0]).toMatchObject({
      kind: "attempt",
      decision: "deny",
      reason_code: "error",
      tool: "export_all",
    });
    expect(audited[0]?.call_id).not.toBe(callId);
  });

  it("refuses the call id of another human's spooled record, and a different record under one's own", async () => {
    const bobs = record({ args: { id: "c-bob" } });
    expect((await spool(bob, [bobs])).body).toMatchObject({ accepted: 1 });
    const stolen = await spool(alice, [bobs]);
    expect(stolen.body.refused).toMatchObject([{ index: 0, code: "call_id_taken" }]);
    expect(stolen.body.refused[0].reason).toContain("another user's or tenant's call");
    const altered = await spool(bob, [{ ...bobs, args: { id: "c-other" } }]);
    expect(altered.body).toMatchObject({ accepted: 0, duplicates: 0, refused: [{ code: "call_id_taken" }] });
    const flipped = await spool(bob, [
      { ...bobs, decision: "deny", reason_code: "fail_closed", outcome: "none" },
    ]);
    expect(flipped.body).toMatchObject({ accepted: 0, duplicates: 0, refused: [{ code: "call_id_taken" }] });
    const rows = await stored(bobs["call_id"]);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ user: "bob", args: { id: "c-bob" } });
  });

  it("refuses a UUIDv7 call id made at another time than the record says", async () => {
    const now = Date.now();
    const rec = record({ call_id: newCallId(now - 3 * 60 * 60_000), time: new Date(now).toISOString() });
    const r = await spool(alice, [rec]);
    expect(r.body).toMatchObject({ accepted: 0, refused: [{ index: 0, code: "call_id_time_mismatch" }] });
    expect(r.body.refused[0].reason).toContain("the call id was made at");
    expect(await stored(rec["call_id"])).toHaveLength(0);
    // a call id that is not a UUIDv7 carries no time to check
    expect((await spool(alice, [record({ call_id: "client-made-call-0001" })])).body).toMatchObject({
      accepted: 1,
    });
  });

  it("refuses records whose time is in the future or implausibly old", async () => {
    const future = record({}, Date.now() + 60 * 60_000);
    const ancient = record({}, Date.now() - 30 * 24 * 60 * 60_000);
    const r = await spool(alice, [future, ancient]);
    expect(r.body).toMatchObject({
      accepted: 0,
      refused: [
        { index: 0, code: "time_in_future" },
        { index: 1, code: "time_too_old" },
      ],
    });
    expect(await stored(future["call_id"])).toHaveLength(0);
    expect(await stored(ancient["call_id"])).toHaveLength(0);
  });

  it("keeps only the size and digest of arguments over limits.max_args_bytes", async () => {
    const args = { blob: "x".repeat(200_000) };
    const bytes = digestArgs(args).bytes;
    expect(bytes).toBe(200_011);
    const rec = record({ tool: "read_email", args });
    expect((await spool(alice, [rec])).body).toMatchObject({ accepted: 1 });
    const [row] = await stored(rec["call_id"]);
    expect(row?.args).toEqual({ omitted: `${bytes} bytes, over the limit of ${MAX_ARGS_BYTES}` });
    expect(row?.args_digest).toBe(digestArgs(args).digest);
  });

  it("takes the chain and the tier from the delegation token, never from the record", async () => {
    const planner = await exchange(alice, "planner");
    const researcher = await exchange(planner, "researcher");
    const rec = record({ agent: "ceo-assistant", chain: ["ceo-assistant"], tier: "interactive" });
    expect((await spool(researcher, [rec])).body).toMatchObject({ accepted: 1 });
    const [row] = await stored(rec["call_id"]);
    expect(row).toMatchObject({
      user: "alice",
      tenant: "acme",
      chain: ["planner", "researcher"],
      agent: "researcher",
      tier: "subagent",
    });
    expect(row?.reason).toContain("the record named the chain ceo-assistant, not taken");
    expect(row?.reason).toContain("the record named the tier interactive, not taken");
    // the same record again under the human's own token (the delegation token expired): still a replay
    expect((await spool(alice, [rec])).body).toMatchObject({ accepted: 0, duplicates: 1 });
    // with the human's own token, no chain is signed: the record's agent alone
    const unsigned = record({ agent: "support-bot", chain: ["ceo-assistant", "support-bot"] });
    expect((await spool(alice, [unsigned])).body).toMatchObject({ accepted: 1 });
    const [plain] = await stored(unsigned["call_id"]);
    expect(plain).toMatchObject({ chain: ["support-bot"], agent: "support-bot" });
    expect(plain?.reason).toContain("the record named the chain ceo-assistant > support-bot, not taken");
  });
});

describe("answers per record", () => {
  it("stores the good records of a batch and says for each bad one what was wrong, without failing the batch", async () => {
    const good = record();
    const good2 = record({ tool: "read_email", args: { mailbox: "a@acme.test" } });
    const batch = [
      good,
      { ...record(), user: "bob" },
      { ...record(), tool: "x\u0000y" },
      { ...record(), decision: "allow", reason_code: "fail_closed" },
      good2,
      "not a record",
      { ...record(), decision: "deny", reason_code: "fail_closed", outcome: "ok" },
    ];
    const r = await spool(alice, batch);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ accepted: 2, duplicates: 0 });
    const refused = r.body.refused as {
      index: number;
      call_id: string | null;
      code: string;
      reason: string;
    }[];
    expect(refused.map((x) => [x.index, x.code])).toEqual([
      [1, "invalid"],
      [2, "invalid"],
      [3, "invalid"],
      [5, "invalid"],
      [6, "invalid"],
    ]);
    expect(refused[0]?.reason).toContain('unknown field "user"');
    expect(refused[1]?.reason).toContain("tool: this value must not contain control characters");
    expect(refused[2]?.reason).toContain("reason_code: a spooled allow is fail_open");
    expect(refused[3]?.call_id).toBeNull();
    expect(refused[4]?.reason).toContain("outcome: a denied call did not run");
    expect(refused[0]?.call_id).toBe((batch[1] as Json)["call_id"]);
    expect(await stored(good["call_id"])).toHaveLength(1);
    expect(await stored(good2["call_id"])).toHaveLength(1);
    expect(await stored((batch[1] as Json)["call_id"])).toHaveLength(0);
    // sent again (the answer was lost): the good ones are duplicates, the bad ones refused again, nothing stored
    const again = await spool(alice, batch);
    expect(again.body).toMatchObject({ accepted: 0, duplicates: 2 });
    expect(again.body.refused).toHaveLength(5);
    // the server stays healthy; a malformed body (not a batch) is still a 400
    expect((await call(server.url, "GET", "/healthz")).status).toBe(200);
    expect(
      (await call(server.url, "POST", "/v1/audit/spool", { token: alice, body: { records: {} } })).status,
    ).toBe(400);
  });

  it("answers every refusal of a large bad batch, but audits twenty and counts the rest in one record", async () => {
    const before = (await refusals("frank")).length;
    const frank = await userToken(idp, "frank");
    const bad = Array.from({ length: 500 }, (_, i) => ({ ...record(), tool: `t\u0000${i}` }));
    const future = Array.from({ length: 30 }, () => record({}, Date.now() + 3_600_000));
    const r = await spool(frank, [...bad, ...future]);
    expect(r.body.accepted).toBe(0);
    expect(r.body.refused).toHaveLength(530);
    expect((await refusals("frank")).length - before).toBe(20);
    const page = await server.governor.queryAudit({ user: "frank", decision: "deny", limit: 1000 });
    const counted = page.records.filter((rec) =>
      rec.reason.includes("more spooled records of this batch refused"),
    );
    expect(counted).toHaveLength(1);
    expect(counted[0]!.reason).toMatch(
      /^510 more spooled records of this batch refused \(invalid ×480, time_in_future ×30\)/,
    );
  });
});
