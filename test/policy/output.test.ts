/**
 * Redaction fails closed: what the model sees of a tool's output is redacted wherever it can carry a field, and
 * withheld where redaction paths cannot reach — in-process, through a real governor and its audit.
 */
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { afterEach, describe, expect, it } from "vitest";
import type { ConfigInput } from "../../src/config/schema.js";
import { runContextOf } from "../../src/context/run.js";
import type { Governor } from "../../src/govern/governor.js";
import { McpOutput, type OutputRedaction, redactOutput, withheldNotice } from "../../src/policy/output.js";
import { compilePath, REDACTED, type RedactPath } from "../../src/policy/redact.js";
import { TEST_TOOLS, testGovernor } from "../support/governor.js";
import { principal } from "../support/principal.js";

const SSN = "078-05-1120";
const customer = { id: "c-1", name: "Ada", ssn: SSN, cards: [{ number: "4111", brand: "visa" }] };
const GET_CUSTOMER = {
  name: "get_customer",
  required_scopes: ["customers:read"],
  redact: ["ssn", "cards[*].number"],
};
const alice = principal({ user: "alice", scopes: ["customers:read"] });

let gov: Governor | undefined;
afterEach(async () => {
  await gov?.close();
  gov = undefined;
});

/** `get_customer` (redact: ssn, cards[*].number) returning `output`, called once as alice; what the model got. */
async function shown(output: unknown, config: Partial<ConfigInput> = {}): Promise<unknown> {
  ({ gov } = await testGovernor(config));
  const tool = gov.governed({ name: "get_customer", execute: async () => output });
  return gov.runAs(alice, { agent: "support-bot" }, () => tool({ id: "c-1" }));
}

/** The reason of the last outcome record. */
async function outcomeReason(): Promise<string | undefined> {
  await gov?.flush();
  const { records } = (await gov?.queryAudit({ user: "alice", limit: 10 })) ?? { records: [] };
  return records.find((r) => r.kind === "outcome")?.reason;
}

describe("redaction of an in-process tool's output", () => {
  it("redacts JSON a tool returns as a string, and hands the model a string", async () => {
    const out = await shown(JSON.stringify(customer));
    expect(typeof out).toBe("string");
    expect(out).not.toContain(SSN);
    expect(out).not.toContain("4111");
    expect(JSON.parse(out as string)).toEqual({
      ...customer,
      ssn: REDACTED,
      cards: [{ number: REDACTED, brand: "visa" }],
    });
    expect(await outcomeReason()).toBe("output redacted");
  });

  it("redacts JSON encoded twice (a JSON string holding JSON)", async () => {
    const out = await shown(JSON.stringify(JSON.stringify(customer)));
    expect(out).not.toContain(SSN);
    expect(JSON.parse(JSON.parse(out as string))).toMatchObject({ name: "Ada", ssn: REDACTED });
  });

  it("withholds plain text, which redaction cannot check, with a reason the model can read, and audits it", async () => {
    const out = await shown(`Ada Lovelace, SSN ${SSN}, card 4111`);
    expect(out).toBe(withheldNotice("get_customer", "plain text"));
    expect(out).toMatch(/^\[withheld by onbehalf: plain text from get_customer, which cannot be checked/);
    expect(await outcomeReason()).toBe("output redacted; withheld, as redaction cannot check it: plain text");
  });

  it("withholds text that only looks like JSON", async () => {
    expect(await shown(`{"ssn": "${SSN}", oops`)).toBe(withheldNotice("get_customer", "plain text"));
  });

  it("withholds binary output (a Buffer), which cannot be redacted", async () => {
    expect(await shown(Buffer.from(JSON.stringify(customer)))).toBe(
      withheldNotice("get_customer", "binary data"),
    );
  });

  it("lets text through when the tool says unparsed_output: pass, and still redacts JSON", async () => {
    const tools = [{ ...GET_CUSTOMER, unparsed_output: "pass" as const }, ...TEST_TOOLS.slice(1)];
    const note = `Ada Lovelace, SSN ${SSN}`;
    expect(await shown(note, { tools })).toBe(note);
    await gov?.close();
    expect(JSON.parse((await shown(JSON.stringify(customer), { tools })) as string).ssn).toBe(REDACTED);
  });

  it("withholds by default, and refuses an unparsed_output it does not know", async () => {
    const { gov: g } = await testGovernor();
    expect(g.policy.tools.get("get_customer")?.unparsedOutput).toBe("withhold");
    await g.close();
    await expect(
      testGovernor({ tools: [{ ...GET_CUSTOMER, unparsed_output: "show" as "pass" }] }),
    ).rejects.toThrow(/unparsed_output/);
  });

  it("passes output that carries no field: numbers, booleans, null, JSON scalars, empty text", async () => {
    for (const value of [42, true, null, undefined, "42", "true", "null", "", "  "]) {
      expect(await shown(value)).toBe(value);
      await gov?.close();
    }
  });

  it("redacts and withholds nothing unless the post-transform is redact", async () => {
    const note = `Ada Lovelace, SSN ${SSN}`;
    const audited = {
      tenants: [{ id: "acme", policy: { defaults: { "*": { permission: "allow" as const } } } }],
    };
    expect(await shown(note, audited)).toBe(note);
    await gov?.close();
    expect(await shown(JSON.stringify(customer), audited)).toBe(JSON.stringify(customer));
  });

  it("keeps the object fast path: a plain object is redacted by path, an untouched one returned as is", async () => {
    expect(await shown(customer)).toEqual({
      ...customer,
      ssn: REDACTED,
      cards: [{ number: REDACTED, brand: "visa" }],
    });
    await gov?.close();
    const clean = { id: "c-2", name: "Bob" };
    expect(await shown(clean)).toBe(clean);
  });

  it("redacts JSON held in a string of a result reported later (the control plane's path)", async () => {
    ({ gov } = await testGovernor());
    const g = gov;
    const run = runContextOf(alice, { chain: ["support-bot"], tier: "interactive" });
    const attempt = await g.begin(run, "get_customer", { id: "c-1" }, { source: "api" });
    const reported = {
      fields: attempt.fields,
      tool: attempt.tool,
      postTransform: "redact" as const,
      redact: [],
      latencyUs: 1,
    };
    const done = g.finishReported(reported, { status: "ok", output: JSON.stringify(customer) });
    expect(done.action).toBe("redact");
    expect(JSON.parse(done.output as string).ssn).toBe(REDACTED);
    const text = g.finishReported(reported, { status: "ok", output: `SSN ${SSN}` });
    expect(text.output).toBe(withheldNotice("get_customer", "plain text"));
  });
});

describe("redaction where the data's shape differs from the path's", () => {
  it("reaches JSON held in a string inside an object (an API response body)", async () => {
    const out = (await shown(
      { statusCode: 200, body: JSON.stringify({ id: "c-1", ssn: SSN }) },
      { tools: [{ ...GET_CUSTOMER, redact: ["body.ssn"] }, ...TEST_TOOLS.slice(1)] },
    )) as { body: string };
    expect(JSON.parse(out.body)).toEqual({ id: "c-1", ssn: REDACTED });
  });

  it("applies a key met on a list to each element, and [*] met on a single object to that object", async () => {
    const rows = (await shown(
      { rows: [{ ssn: SSN }, { ssn: SSN }] },
      { tools: [{ ...GET_CUSTOMER, redact: ["rows.ssn"] }, ...TEST_TOOLS.slice(1)] },
    )) as { rows: { ssn: string }[] };
    expect(rows.rows).toEqual([{ ssn: REDACTED }, { ssn: REDACTED }]);
    const card = (await shown({ cards: { number: "4111", brand: "visa" } })) as { cards: unknown };
    expect(card.cards).toEqual({ number: REDACTED, brand: "visa" });
  });

  it("redacts each part of a list of parts, and withholds prose beside JSON", async () => {
    const parts = (await shown([
      { id: "c-1", ssn: SSN },
      JSON.stringify({ ssn: SSN }),
      `SSN is ${SSN}`,
    ])) as unknown[];
    expect(parts[0]).toEqual({ id: "c-1", ssn: REDACTED });
    expect(JSON.parse(parts[1] as string)).toEqual({ ssn: REDACTED });
    expect(parts[2]).toBe(withheldNotice("get_customer", "plain text"));
    expect(JSON.stringify(parts)).not.toContain(SSN);
  });

  it("redacts an MCP content part's own metadata", () => {
    const result = {
      content: [{ type: "text", text: "{}", _meta: { ssn: SSN } }],
    } as unknown as CallToolResult;
    const out = redactOutput(new McpOutput(result), {
      tool: "get_customer",
      paths: [compilePath("ssn") as RedactPath],
      unparsed: "withhold",
    }) as McpOutput;
    expect(JSON.stringify(out.result)).not.toContain(SSN);
  });
});

describe("redactOutput", () => {
  const paths = ["ssn"].map((p) => compilePath(p) as RedactPath);
  const r = (over: Partial<OutputRedaction> = {}): OutputRedaction => ({
    tool: "t",
    paths,
    unparsed: "withhold",
    ...over,
  });

  it("returns text it did not change as the very same string, however often it is encoded", () => {
    const twice = JSON.stringify(JSON.stringify({ id: "c-1" }));
    expect(redactOutput(twice, r())).toBe(twice);
    expect(redactOutput('"quoted prose"', r())).toBe(withheldNotice("t", "plain text"));
  });

  it("does nothing without paths", () => {
    const text = `SSN ${SSN}`;
    expect(redactOutput(text, r({ paths: [] }))).toBe(text);
  });

  it("redacts each part of an MCP result on its own and keeps the very result when nothing changed", () => {
    const clean: CallToolResult = { content: [{ type: "text", text: '{"id":"c-1"}' }] };
    const view = new McpOutput(clean);
    expect(redactOutput(view, r())).toBe(view);
    const leaky: CallToolResult = {
      content: [
        { type: "text", text: JSON.stringify({ ssn: SSN }) },
        { type: "text", text: `note: ${SSN}` },
        {
          type: "resource",
          resource: { uri: "crm://c-1", mimeType: "application/json", text: `{"ssn":"${SSN}"}` },
        },
        { type: "resource", resource: { uri: "crm://c-1.bin", blob: Buffer.from(SSN).toString("base64") } },
        { type: "image", data: Buffer.from(SSN).toString("base64"), mimeType: "image/png" },
      ],
      structuredContent: { id: "c-1", ssn: SSN },
      _meta: { ssn: SSN },
      leak: SSN,
    };
    const withheld: string[] = [];
    const out = McpOutput.resultOf(redactOutput(new McpOutput(leaky), r({ withheld })), leaky);
    expect(JSON.stringify(out)).not.toContain(SSN);
    expect(out.content[0]).toEqual({ type: "text", text: '{"ssn":"[REDACTED]"}' });
    expect(out.content[2]).toMatchObject({ type: "resource", resource: { text: '{"ssn":"[REDACTED]"}' } });
    expect(withheld).toEqual([
      "plain text",
      "an embedded resource (no type) of binary data",
      "an image (image/png)",
    ]);
    expect(out.structuredContent).toEqual({ id: "c-1", ssn: REDACTED });
    const passed = McpOutput.resultOf(redactOutput(new McpOutput(leaky), r({ unparsed: "pass" })), leaky);
    expect(passed.content[1]).toBe(leaky.content[1]);
    expect(passed.content[4]).toBe(leaky.content[4]);
  });
});
