/**
 * The live config, honest: which config is in force at start and why, what the admin API changed (version, who,
 * when), and never a config made from another file or by another deployment sharing the Redis.
 */
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ConfigInput } from "../../src/config/schema.js";
import { type OnbehalfServer, startServer } from "../../src/server/app.js";
import { type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { type OwnRedis, startOwnRedis } from "../support/redis-server.js";
import { ACME_POLICY, ADMIN, call, serverConfig, startTestServer, userToken } from "../support/server.js";

let idp: OidcProviderHandle;
let redis: OwnRedis;
let alice: string;
const open: OnbehalfServer[] = [];

beforeAll(async () => {
  idp = await startOidcProvider();
  redis = await startOwnRedis();
  alice = await userToken(idp, "alice");
});
afterAll(async () => {
  await Promise.allSettled(open.map((s) => s.close()));
  await redis?.stop();
  await idp?.close();
});

const keys = mkdtempSync(join(tmpdir(), "onbehalf-deployments-"));

/** An instance of `deployment`: the instances of a deployment share its server signing key, as real ones do. */
async function start(
  overrides: Partial<ConfigInput>,
  deployment = "one",
  warn: (m: string) => void = () => {},
): Promise<OnbehalfServer> {
  const server = await startTestServer(
    idp,
    {
      ...overrides,
      server: {
        ...serverConfig(idp).server,
        signing_key: join(keys, `${deployment}.jwk`),
        ...overrides.server,
      },
    },
    { warn },
  );
  open.push(server);
  return server;
}

async function stop(server: OnbehalfServer): Promise<void> {
  open.splice(open.indexOf(server), 1);
  await server.close();
}

const readEmail = (s: OnbehalfServer) =>
  call(s.url, "POST", "/v1/check", {
    token: alice,
    body: { tool: "read_email", agent: { name: "bot" } },
  }).then((r) => r.body.decision as string);

const denyEmail = (s: OnbehalfServer) =>
  call(s.url, "PATCH", "/v1/admin/tenants/acme/policy", {
    token: ADMIN,
    body: { tools: { read_email: { "*": { permission: "deny" } } } },
  });

describe("the live config", () => {
  it("says which config is in force and why, keeps the admin's changes across a restart of the same file, and shows version, who and when", async () => {
    const limits = { store: redis.url, redis_prefix: "deploy-a:" };
    const first = await start({ limits });
    expect(first.configSource).toMatch(/is in force \(no live changes are stored\)/);
    expect((await call(first.url, "GET", "/v1/admin/config", { token: ADMIN })).body).toMatchObject({
      source: "file",
      version: 0,
    });
    expect((await call(first.url, "GET", "/v1/admin/config")).status).toBe(401);
    expect((await denyEmail(first)).status).toBe(200);
    const live = (await call(first.url, "GET", "/v1/admin/config", { token: ADMIN })).body;
    expect(live).toMatchObject({
      source: "live",
      version: 1,
      changed_by: expect.stringMatching(/^admin:[0-9a-f]{8}$/),
      base: expect.stringMatching(/^sha256:[0-9a-f]{64}$/),
    });
    expect(Date.parse(live.changed_at)).toBeGreaterThan(Date.now() - 60_000);
    const acme = live.config.tenants.find((t: { id: string }) => t.id === "acme");
    expect(acme.policy.tools.read_email).toEqual({ "*": { permission: "deny" } });
    expect(JSON.stringify(live)).not.toContain(ADMIN);
    await stop(first);

    // The same file again: the stored config (the file plus the change) is in force, and it says so.
    const again = await start({ limits });
    expect(again.configSource).toMatch(
      /the live config is in force \(version 1, changed by admin:[0-9a-f]{8}/,
    );
    expect(await readEmail(again)).toBe("deny");
    await stop(again);

    // The file's policy edited since: the server refuses to start, naming the choice.
    const edited = { limits, tenants: [{ id: "acme", policy: { ...ACME_POLICY, rules: [] } }] };
    await expect(start(edited)).rejects.toThrow(
      /the live config in the state store \(version 1.*was made from another version of the config.*server\.live_config to file .* or stored/,
    );
    // The operator chooses the file: it is in force, and the stored record is replaced.
    const fromFile = await start({ ...edited, server: { live_config: "file" } });
    expect(fromFile.configSource).toMatch(
      /is in force, as server\.live_config: file says; it replaced the live config/,
    );
    expect(await readEmail(fromFile)).toBe("allow");
    expect((await call(fromFile.url, "GET", "/v1/admin/config", { token: ADMIN })).body).toMatchObject({
      source: "file",
      version: 2,
      changed_by: "file",
    });
  });

  it("never adopts another deployment's config: a prefix of its own, and a change made from another file is ignored", async () => {
    const mine = await start({ limits: { store: redis.url, redis_prefix: "deploy-b:" } });
    const theirs = await start({ limits: { store: redis.url, redis_prefix: "deploy-c:" } });
    expect((await denyEmail(theirs)).status).toBe(200);
    await new Promise((r) => setTimeout(r, 200));
    expect(await readEmail(theirs)).toBe("deny");
    expect(await readEmail(mine)).toBe("allow"); // its own prefix: it never saw the change

    // Two deployments made to share one prefix, even with the very same tenants and tools: a change of one is
    // never adopted by the other, and said so; a third deployment refuses to start on the other's config.
    const warnings: string[] = [];
    const shared = { limits: { store: redis.url, redis_prefix: "shared:" } };
    const one = await start(shared, "staging", (m) => warnings.push(m));
    const other = await start(shared, "production");
    expect((await denyEmail(other)).status).toBe(200);
    expect(await readEmail(other)).toBe("deny");
    const t0 = Date.now();
    while (warnings.length === 0 && Date.now() - t0 < 2_000) await new Promise((r) => setTimeout(r, 20));
    expect(warnings.join("\n")).toMatch(
      /ignored a shared config change \(version 1, by admin:[0-9a-f]{8}\): it was written by another deployment \(server signing key \S+\) sharing limits\.redis_prefix/,
    );
    expect(await readEmail(one)).toBe("allow");
    await expect(start(shared, "qa")).rejects.toThrow(
      /was written by another deployment \(server signing key \S+, this one's is \S+\): give each deployment sharing a Redis its own limits\.redis_prefix/,
    );
    expect((await call(one.url, "GET", "/v1/admin/config", { token: ADMIN })).body).toMatchObject({
      version: 0,
    });
  });

  it("shares a change or undoes it: a change another instance overtook, or that Redis cannot take, is not in force anywhere", async () => {
    const own = await startOwnRedis();
    try {
      const limits = { store: own.url, redis_prefix: "cas:" };
      const a = await start({ limits }, "cas");
      const b = await start({ limits }, "cas");
      // Two admins at the same moment on two instances: both answered, one after the other, never one lost.
      const [first, second] = await Promise.all([
        denyEmail(a),
        call(b.url, "PATCH", "/v1/admin/tenants/acme/policy", {
          token: ADMIN,
          body: { tools: { get_customer: { "*": { permission: "deny" } } } },
        }),
      ]);
      const statuses = [first.status, second.status].sort();
      expect(statuses[0]).toBe(200);
      const live = (await call(a.url, "GET", "/v1/admin/config", { token: ADMIN })).body;
      if (statuses[1] === 409) {
        expect(live.version).toBe(1); // the other was refused, undone where it was made, and said so
      } else {
        expect(live.version).toBe(2); // or it came second, on top of the first
        expect(live.config.tenants[0].policy.tools).toMatchObject({ read_email: {}, get_customer: {} });
      }
      // Redis goes away: the change is refused and undone, the audit says both.
      await own.stop();
      const refused = await call(a.url, "PATCH", "/v1/admin/tenants/acme/policy", {
        token: ADMIN,
        body: { tools: { issue_refund: { "*": { permission: "allow" } } } },
      });
      expect(refused.status).toBe(503);
      expect(refused.body.error.message).toMatch(/^not changed: /);
      const acme = a.governor.config.tenants.find((t) => t.id === "acme")!;
      expect(acme.policy.tools["issue_refund"]).toBeUndefined();
      await a.governor.flush();
      const records = (await a.governor.queryAudit({ limit: 10 })).records.map((r) => r.reason);
      expect(
        records.some((r) =>
          /^undone: patched the policy of tenant acme \(by admin:[0-9a-f]{8}\): not changed: /.test(r),
        ),
      ).toBe(true);
    } finally {
      await own.stop().catch(() => {});
    }
  });

  it("follows a reload: every instance on the edited file adopts it, and a bad edit changes nothing", async () => {
    const dir = mkdtempSync(join(tmpdir(), "onbehalf-reload-"));
    const file = join(dir, "onbehalf.yaml");
    const config = serverConfig(idp, { limits: { store: redis.url, redis_prefix: "deploy-r:" } });
    // One file, a store per instance (as two hosts would have): the path comes from the environment.
    const write = (c: ConfigInput) =>
      writeFileSync(file, JSON.stringify({ ...c, audit: { ...c.audit, store: "sqlite:${AUDIT_DB}" } }));
    write(config);
    const instance = async (name: string, warn: (m: string) => void = () => {}) => {
      const env = { ...process.env, AUDIT_DB: join(dir, `${name}.db`) };
      const server = await startServer({ config: file, env, warn });
      open.push(server);
      return server;
    };
    const a = await instance("a");
    const b = await instance("b");
    expect(await readEmail(b)).toBe("allow");

    const acme = {
      id: "acme",
      policy: { ...ACME_POLICY, tools: { read_email: { "*": { permission: "deny" as const } } } },
    };
    write({ ...config, tenants: [acme, config.tenants![1]!] });
    expect(await a.reload()).toMatch(
      /^reloaded .*onbehalf\.yaml: its tenants and tools are in force \(version 1\)$/,
    );
    expect(await readEmail(a)).toBe("deny");
    const t0 = Date.now();
    while ((await readEmail(b)) !== "deny" && Date.now() - t0 < 2_000)
      await new Promise((r) => setTimeout(r, 20));
    expect(await readEmail(b)).toBe("deny"); // b read the same file again and followed
    expect((await call(b.url, "GET", "/v1/admin/config", { token: ADMIN })).body).toMatchObject({
      source: "file",
      version: 1,
      changed_by: "file",
    });

    // A bad edit: refused with why, nothing changes anywhere; an edit that touches another section too (or a
    // file cut short that lost one) is refused whole: those take a restart.
    writeFileSync(file, readFileSync(file, "utf8").replace('"read_email":{"*"', '"read_emial":{"*"'));
    await expect(a.reload()).rejects.toMatchObject({ code: "ERR_CONFIG_INVALID" });
    expect(await readEmail(a)).toBe("deny");
    write({
      ...config,
      tenants: [acme, config.tenants![1]!],
      server: { ...config.server, max_body_bytes: 4096 },
    });
    await expect(a.reload()).rejects.toThrow(/server changed, which takes effect only on restart/);
    expect(await readEmail(a)).toBe("deny");
    expect((await call(a.url, "GET", "/v1/admin/config", { token: ADMIN })).body).toMatchObject({
      version: 1,
    });
  });
});
