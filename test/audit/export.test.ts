import { describe, expect, it } from "vitest";
import { exportAudit } from "../../src/audit/export.js";
import { openAuditLog } from "../../src/audit/log.js";
import { leafHash } from "../../src/audit/record.js";
import { openSqliteStore } from "../../src/audit/sqlite.js";
import { fields } from "./store-suite.js";

async function storeWith(n: number) {
  const store = openSqliteStore(":memory:");
  const log = await openAuditLog(store, { logId: "exp" });
  for (let i = 1; i <= n; i++) log.append(fields(i));
  await log.close();
  return store;
}

describe("audit export", () => {
  it("writes every record as a JSON line that still verifies against its leaf hash", async () => {
    const store = await storeWith(12);
    const lines: string[] = [];
    expect(await exportAudit(store, { format: "jsonl" }, (l) => void lines.push(l))).toBe(12);
    const records = lines.map((l) => JSON.parse(l));
    expect(records.map((r) => r.seq)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    const { leaf_hash, ...rest } = records[4];
    const canonical = JSON.stringify(
      Object.fromEntries(Object.entries(rest).sort(([a], [b]) => (a < b ? -1 : 1))),
    );
    expect(leafHash(canonical)).toBe(leaf_hash);
    const since: string[] = [];
    await exportAudit(store, { format: "jsonl", since: fields(10).time }, (l) => void since.push(l));
    expect(since).toHaveLength(3);
    await store.close();
  });

  it("writes OpenTelemetry log records (OTLP/JSON) with the human, the chain and the decision", async () => {
    const store = await storeWith(5);
    const lines: string[] = [];
    await exportAudit(store, { format: "otel", batch: 2 }, (l) => void lines.push(l));
    expect(lines).toHaveLength(3);
    const request = JSON.parse(lines[0]!);
    const records = request.resourceLogs[0].scopeLogs[0].logRecords;
    expect(request.resourceLogs[0].resource.attributes).toContainEqual({
      key: "service.name",
      value: { stringValue: "onbehalf" },
    });
    expect(records).toHaveLength(2);
    const first = records[0];
    expect(first.timeUnixNano).toBe(`${Date.parse(fields(1).time)}000000`);
    const attrs = Object.fromEntries(
      first.attributes.map((a: { key: string; value: Record<string, unknown> }) => [
        a.key,
        Object.values(a.value)[0],
      ]),
    );
    expect(attrs).toMatchObject({
      "enduser.id": "bob",
      "onbehalf.tool": "lookup",
      "onbehalf.decision": "allow",
      "onbehalf.seq": "1",
    });
    expect(attrs["onbehalf.chain"]).toEqual({ values: [{ stringValue: "bot" }] });
    const denied = JSON.parse(lines[2]!).resourceLogs[0].scopeLogs[0].logRecords[0];
    expect([denied.severityText, denied.severityNumber]).toEqual(["WARN", 13]);
    await store.close();
  });
});
