/**
 * `audit.writer_thread: true`: the control plane commits its SQLite audit on a worker thread. What it promises
 * is unchanged: every answered check has its attempt record committed, a reported result its outcome, nothing
 * lost or duplicated under concurrent requests, the log verifies; and a second process's writer is still refused.
 */
import { createPublicKey } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openSqliteStore } from "../../src/audit/sqlite.js";
import { verifyAudit } from "../../src/audit/verify.js";
import { loadOrCreateSigningKey } from "../../src/identity/keys.js";
import type { OnbehalfServer } from "../../src/server/app.js";
import { type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { ADMIN, call, serverConfig, startTestServer, userToken } from "../support/server.js";

const dir = mkdtempSync(join(tmpdir(), "onbehalf-writer-thread-"));
let idp: OidcProviderHandle;
let server: OnbehalfServer;

beforeAll(async () => {
  idp = await startOidcProvider();
  const base = serverConfig(idp);
  server = await startTestServer(idp, {
    audit: {
      store: `sqlite:${join(dir, "audit.db")}`,
      signing_key: join(dir, "audit.jwk"),
      flush_ms: 1,
      writer_thread: true,
      log_id: "threaded",
    },
    server: base.server,
  });
});
afterAll(async () => {
  await server?.close();
  await idp?.close();
});

describe("audit commits on a writer thread", () => {
  it("commits every answered check and reported result, concurrent or not, and the log verifies", async () => {
    const alice = await userToken(idp, "alice");
    const checks = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        call(server.url, "POST", "/v1/check", {
          token: alice,
          body: { tool: "get_customer", args: { id: `c-${i}` }, agent: { name: "bot" } },
        }),
      ),
    );
    expect(checks.every((c) => c.body.decision === "allow")).toBe(true);
    const reported = await Promise.all(
      checks.slice(0, 50).map((c) =>
        call(server.url, "POST", `/v1/calls/${c.body.call_id}/result`, {
          token: alice,
          body: { status: "ok", output: { id: "c", ssn: "078-05-1120" } },
        }),
      ),
    );
    expect(reported.every((r) => r.status === 200)).toBe(true);
    await server.governor.flush();
    const records = (await call(server.url, "GET", "/v1/audit?user=alice&limit=1000", { token: ADMIN })).body
      .records as { kind: string; call_id: string; seq: number }[];
    const attempts = records.filter((r) => r.kind === "attempt");
    expect(new Set(attempts.map((r) => r.call_id))).toEqual(new Set(checks.map((c) => c.body.call_id)));
    expect(records.filter((r) => r.kind === "outcome")).toHaveLength(50);
    expect(new Set(records.map((r) => r.seq)).size).toBe(records.length);

    await server.governor.auditLog.checkpoint();
    const store = openSqliteStore(join(dir, "audit.db"));
    try {
      const key = loadOrCreateSigningKey(join(dir, "audit.jwk"));
      const report = await verifyAudit(store, { keys: [createPublicKey(key.privateKey)] });
      expect(report.logs.map((l) => [l.log, l.finding])).toEqual([["threaded", null]]);
      expect(report.logs[0]!.verifiedCheckpoints).toBeGreaterThan(0);
    } finally {
      await store.close();
    }
  });

  it("still refuses a second writer for the log, naming the holder", async () => {
    const second = startTestServer(idp, {
      audit: {
        store: `sqlite:${join(dir, "audit.db")}`,
        signing_key: join(dir, "audit.jwk"),
        writer_thread: true,
        log_id: "threaded",
      },
    });
    await expect(second).rejects.toThrow(
      /audit log threaded is being written by another writer: onbehalf serve/,
    );
  });
});
