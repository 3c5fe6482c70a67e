import { execFileSync } from "node:child_process";
import { mkdtempSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { type AuditRow, openSqliteStore } from "../../src/audit/sqlite.js";
import { openThreadedSqliteStore } from "../../src/audit/sqlite-thread.js";
import { type AuditStore, failureOf } from "../../src/audit/store.js";
import { describeStore } from "./store-suite.js";

/** SQL run on the store's own connection (the tampering tests edit the file under it). */
async function exec(store: AuditStore, sql: string, params: unknown[]) {
  const db = (store as AuditStore & { db: Database.Database }).db;
  const stmt = db.prepare(sql);
  if (stmt.reader) return stmt.all(...params) as Record<string, unknown>[];
  stmt.run(...params);
  return [];
}

describeStore("SQLite", {
  async open() {
    return openSqliteStore(":memory:");
  },
  exec,
});

// The same suite with the commits on a worker thread (audit.writer_thread): a file per store, as it needs.
describeStore("SQLite, commits on a writer thread", {
  async open() {
    return openThreadedSqliteStore(join(mkdtempSync(join(tmpdir(), "onbehalf-sqlite-thread-")), "audit.db"));
  },
  exec,
});

describe("WAL checkpoints off the committing thread", () => {
  const holder = { holder: "test:1:x", host: "test", pid: 1, label: "test" };
  const row = (seq: number): AuditRow => [
    "log",
    seq,
    JSON.stringify({ seq, padding: "x".repeat(600) }),
    seq.toString(16).padStart(64, "0"),
    new Date(1_800_000_000_000 + seq).toISOString(),
    "acme",
    `user-${seq % 50}`,
    "get_customer",
    "allow",
    "bot",
    `call-${seq}`,
    `trace-${seq}`,
  ];
  /**
   * A file store with `n` records written; resolves to the size of its database file (not the WAL), and again once
   * the checkpointer has copied the WAL into it (or `waitMs` has passed).
   */
  async function written(n: number, waitMs: number) {
    const path = join(mkdtempSync(join(tmpdir(), "onbehalf-sqlite-wal-")), "audit.db");
    const store = openSqliteStore(path);
    await store.init();
    await store.claim("log", holder, { staleMs: 60_000, gone: () => false });
    for (let seq = 1; seq <= n; seq += 100) {
      await store.appendRows(
        Array.from({ length: Math.min(100, n - seq + 1) }, (_, i) => row(seq + i)),
        holder.holder,
      );
    }
    const before = statSync(path).size;
    // the checkpointer starts on a thread of its own (from source: after loading tsx) and copies every 200 ms
    const deadline = Date.now() + waitMs;
    while (statSync(path).size <= before + 1_000_000 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const after = statSync(path).size;
    await store.close();
    return { before, after, store: openSqliteStore(path) };
  }

  it("copies a written store's WAL into its database in the background, and closes with it", async () => {
    const { before, after, store } = await written(2_500, 10_000);
    // the pages were in the WAL only (below the writer's own checkpoint); the checkpointer copied them over
    expect(after).toBeGreaterThan(before + 1_000_000);
    expect((await store.rows("log", 1, 5_000)).length).toBe(2_500);
    await store.close();
  });

  it("closes with its checkpointer in a process with nothing else to do, and carries on after", () => {
    // the checkpointer is unref'd while it runs: a close that waited on it unref'd ended such a process early
    const script = `
      import { openSqliteStore } from ${JSON.stringify(new URL("../../src/audit/sqlite.ts", import.meta.url).href)};
      const store = openSqliteStore(${JSON.stringify(join(mkdtempSync(join(tmpdir(), "onbehalf-sqlite-close-")), "a.db"))});
      await store.init();
      const holder = { holder: "t:1:x", host: "t", pid: 1, label: "t" };
      await store.claim("log", holder, { staleMs: 60000, gone: () => false });
      for (let seq = 1; seq <= 2500; seq += 100)
        await store.appendRows(Array.from({ length: 100 }, (_, i) =>
          ["log", seq + i, "{}", "h" + (seq + i), new Date().toISOString(), null, null, null, "allow", null, "c" + (seq + i), null]), holder.holder);
      await store.close();
      console.log("closed");`;
    const out = execFileSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
      encoding: "utf8",
    });
    expect(out.trim()).toBe("closed");
  });

  it("lets a process that never closes its writer thread end once its records are committed", () => {
    // the writer thread is ref'd only while a commit is in flight: idle, it used to keep such a process alive
    const path = join(mkdtempSync(join(tmpdir(), "onbehalf-sqlite-thread-exit-")), "a.db");
    const script = `
      import { openAuditLog } from ${JSON.stringify(new URL("../../src/audit/log.ts", import.meta.url).href)};
      import { openThreadedSqliteStore } from ${JSON.stringify(new URL("../../src/audit/sqlite-thread.ts", import.meta.url).href)};
      const log = await openAuditLog(openThreadedSqliteStore(${JSON.stringify(path)}), { logId: "exit", flushMs: 1 });
      for (let i = 0; i < 300; i++)
        log.append({ kind: "attempt", time: new Date().toISOString(), tenant: "acme", user: "alice", email: null,
          agent: "bot", tier: null, chain: ["bot"], tool: "t", args_digest: null, args: {}, decision: "allow",
          reason_code: "ok", reason: "", rule: null, outcome: "none", trace_id: null, call_id: "c" + i, latency_us: 1,
          source: "inproc", shadow: null });
      console.log("appended, not closed");`;
    const out = execFileSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
      encoding: "utf8",
      timeout: 20_000,
    });
    expect(out.trim()).toBe("appended, not closed");
    const store = openSqliteStore(path);
    expect(store.db.prepare("SELECT count(*) FROM audit_records").pluck().get()).toBe(300);
    return store.close();
  });

  it("starts no thread for a store that wrote little: its WAL waits for the writer's own checkpoint", async () => {
    const { before, after, store } = await written(1_000, 1_000);
    expect(after).toBe(before);
    await store.close();
  });
});

describe("appending where the log ends (the writer thread's pipeline)", () => {
  const holder = { holder: "test:1:y", host: "test", pid: 1, label: "test" };
  const row = (seq: number): AuditRow => [
    "log",
    seq,
    `{"seq":${seq}}`,
    seq.toString(16).padStart(64, "0"),
    new Date(1_800_000_000_000 + seq).toISOString(),
    "acme",
    "alice",
    "get_customer",
    "allow",
    "bot",
    `call-${seq}`,
    null,
  ];
  it("commits a batch only after the record it names, and says which way it missed (gap, conflict)", async () => {
    const store = openSqliteStore(":memory:");
    await store.claim("log", holder, { staleMs: 60_000, gone: () => false });
    await store.appendRows([row(1), row(2)], holder.holder, 0);
    const failure = (p: Promise<void>) => p.then(() => "committed", failureOf);
    // a batch sent behind one that did not commit (records 3–4 missing) is refused, and nothing of it is written
    expect(await failure(store.appendRows([row(5), row(6)], holder.holder, 4))).toBe("gap");
    // a batch written already (its acknowledgement lost, sent again) is a conflict, which the writer settles by leaf hash
    expect(await failure(store.appendRows([row(1), row(2)], holder.holder, 0))).toBe("conflict");
    expect(await failure(store.appendRows([row(3), row(4)], holder.holder, 2))).toBe("committed");
    expect((await store.rows("log", 1, 10)).map((r) => r.seq)).toEqual([1, 2, 3, 4]);
    await store.close();
  });
});
