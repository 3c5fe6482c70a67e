/**
 * docs/frameworks.md stays true: every code block in it is the `#region doc` of a file under
 * test/adapters/examples/ (with `onbehalf` in place of the relative imports) or the YAML the governor below is
 * built from, and every example runs here inside its real framework with that framework's scripted model.
 */
import { mkdtempSync, readFileSync } from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { setTracingDisabled } from "@openai/agents";
import { assistantMessage, functionCall, ScriptedModel } from "@openai/agents-core/testing";
import { AIMessage, fakeModel } from "langchain";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import type { ConfigInput } from "../../src/config/schema.js";
import { createGovernor } from "../../src/govern/bootstrap.js";
import type { Governor } from "../../src/govern/governor.js";
import { devIssuerConfig, mintDevToken } from "../../src/identity/dev-issuer.js";
import { loadOrCreateSigningKey } from "../../src/identity/keys.js";
import type { Principal } from "../../src/identity/principal.js";
import { TEST_AUDIT_KEY } from "../support/governor.js";
import { askSupport as aiSdkExample } from "./examples/ai-sdk.js";
import { askSupport as langchainExample } from "./examples/langchain.js";
import { askSupport as mastraExample } from "./examples/mastra.js";
import { crmServer } from "./examples/mcp-server.js";
import { askSupport as openaiExample } from "./examples/openai-agents.js";
import { scriptedModel } from "./mock-model.js";
import { attemptsOf, handOffAttempts } from "./support.js";

setTracingDisabled(true);

const DOC = readFileSync(new URL("../../docs/frameworks.md", import.meta.url), "utf8");

/** The doc's fenced blocks, with the example each one says it is. */
function blocks(): { example: string | undefined; lang: string; code: string }[] {
  return [...DOC.matchAll(/(?:<!-- example: (\S+) -->\n)?```(\w*)\n([\s\S]*?)```/g)].map((m) => ({
    example: m[1],
    lang: m[2] ?? "",
    code: m[3] ?? "",
  }));
}

/** The `#region doc` of an example file, as the doc shows it. */
function region(path: string): string {
  const source = readFileSync(new URL(`../../${path}`, import.meta.url), "utf8");
  const start = source.indexOf("// #region doc\n");
  const end = source.indexOf("// #endregion");
  if (start < 0 || end < start) throw new Error(`${path} has no // #region doc`);
  return source
    .slice(start + "// #region doc\n".length, end)
    .replace(/"\.\.\/\.\.\/\.\.\/src\/adapters\/([\w-]+)\.js"/g, '"onbehalf/$1"')
    .replaceAll('"../../../src/index.js"', '"onbehalf"');
}

let gov: Governor;
const devKey = loadOrCreateSigningKey(join(mkdtempSync(join(tmpdir(), "onbehalf-docs-")), "dev.jwk"));

beforeAll(async () => {
  const config = blocks().find((b) => b.example === "config");
  gov = await createGovernor({
    config: {
      ...(parse(config!.code) as ConfigInput),
      issuers: [devIssuerConfig(devKey.publicJwk)],
      audit: { store: "sqlite::memory:", flush_ms: 1, signing_key: TEST_AUDIT_KEY },
    },
    warn: () => {},
  });
  // The examples act for a human verified as an app would: a token from the one trusted issuer.
  alice = await gov.verify(
    mintDevToken(devKey, {
      sub: "alice",
      tenant: "acme",
      email: "alice@acme.test",
      scopes: ["customers:read", "email.read", "refunds:write"],
    }),
  );
});
afterAll(() => gov.close());
let alice: Principal;

describe("docs/frameworks.md", () => {
  it("has no code block that is not an example the tests run, and each matches its file", () => {
    const all = blocks();
    expect(all.length).toBeGreaterThanOrEqual(6);
    for (const b of all) {
      expect(b.example, `a \`\`\`${b.lang} block has no <!-- example: ... --> marker`).toBeDefined();
      if (b.example !== "config") expect(b.code).toBe(region(b.example!));
    }
  });

  it("OpenAI Agents: a hand-off to the mailer; its over-reaching lookup is denied", async () => {
    const model = new ScriptedModel([
      [functionCall("get_customer", { id: "c-1" }, { callId: "1" })],
      [functionCall("transfer_to_mailer", {}, { callId: "2" })],
      [
        functionCall("read_email", { mailbox: "alice@acme.test" }, { callId: "3" }),
        functionCall("get_customer", { id: "c-1" }, { callId: "4" }),
      ],
      [assistantMessage("you have 3 new messages")],
    ]);
    await expect(openaiExample(gov, alice, model, "any mail?")).resolves.toBe("you have 3 new messages");
    expect(JSON.stringify(model.calls[1]?.request.input)).toContain("[REDACTED]");
    expect(await attemptsOf(gov, "alice")).toEqual(handOffAttempts("triage"));
  });

  it("AI SDK: the lookup runs redacted; a big refund waits for approval", async () => {
    const m = scriptedModel([
      { tools: [["get_customer", { id: "c-1" }]] },
      { tools: [["issue_refund", { amount: 900 }]] },
    ]);
    const { approvals } = await aiSdkExample(gov, alice, m.model, "refund c-1 900");
    expect(approvals).toHaveLength(1);
    expect(m.shown().join()).toContain("[REDACTED]");
    expect((await attemptsOf(gov, "alice")).slice(-2)).toEqual([
      ["get_customer", "allow", "ok", ["support-bot"]],
      ["issue_refund", "ask", "approval_required", ["support-bot"]],
    ]);
  });

  it("LangChain: the supervisor's mail task runs as the mailer sub-agent", async () => {
    const model = fakeModel()
      .respondWithTools([{ name: "ask_mailer", args: { task: "read my mail" } }])
      .respondWithTools([{ name: "read_email", args: { mailbox: "alice@acme.test" } }])
      .respond(new AIMessage("3 new messages"))
      .respond(new AIMessage("you have 3 new messages"));
    await expect(langchainExample(gov, alice, model, "any mail?")).resolves.toBe("you have 3 new messages");
    expect((await attemptsOf(gov, "alice")).at(-1)).toEqual([
      "read_email",
      "allow",
      "ok",
      ["supervisor", "mailer"],
    ]);
  });

  it("Mastra: the supervisor delegates to the mailer sub-agent", async () => {
    const m = scriptedModel([
      { tools: [["agent-mailer", { prompt: "read my mail" }]] },
      { tools: [["read_email", { mailbox: "alice@acme.test" }]] },
      "3 new messages",
      "you have 3 new messages",
    ]);
    await expect(mastraExample(gov, alice, m.model, "any mail?")).resolves.toBe("you have 3 new messages");
    expect((await attemptsOf(gov, "alice")).at(-1)).toEqual([
      "read_email",
      "allow",
      "ok",
      ["supervisor", "mailer"],
    ]);
  });

  it("MCP server: the official client with a bearer token gets the customer, redacted", async () => {
    const http = await new Promise<Server>((resolve) => {
      const s: Server = crmServer(gov).listen(0, "127.0.0.1", () => resolve(s));
    });
    const url = new URL(`http://127.0.0.1:${(http.address() as AddressInfo).port}/mcp`);
    const token = mintDevToken(devKey, { sub: "erin", tenant: "acme", scopes: ["customers:read"] });
    const client = new Client({ name: "support-bot", version: "1.0.0" });
    await client.connect(
      new StreamableHTTPClientTransport(url, {
        requestInit: { headers: { authorization: `Bearer ${token}` } },
      }),
    );
    const result = (await client.callTool({
      name: "get_customer",
      arguments: { id: "c-1" },
    })) as CallToolResult;
    expect(result.content[0]).toMatchObject({
      type: "text",
      text: expect.stringContaining('"ssn":"[REDACTED]"'),
    });
    expect(await attemptsOf(gov, "erin")).toEqual([["get_customer", "allow", "ok", ["mcp-client"]]]);
    await client.close();
    await new Promise((resolve) => http.close(resolve));
  });
});
