/**
 * Redaction fails closed for MCP results: an SSN behind `redact: [ssn]` reaches the model through no part of a
 * result — not a second JSON part, a note, an embedded resource, a blob, an image, nor text that structured
 * content leaves out. The official MCP client calls the gateway in front of a real upstream MCP server
 * (test/support/leaky-mcp.ts), and an MCP server built with the adapter (`governedHandler`).
 */

import { mkdtempSync } from "node:fs";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { requireBearerAuth } from "@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js";
import { createMcpExpressApp } from "@modelcontextprotocol/sdk/server/express.js";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { governedHandler, onbehalfVerifier } from "../../src/adapters/mcp-server.js";
import type { Governor } from "../../src/govern/governor.js";
import { devIssuerConfig, mintDevToken } from "../../src/identity/dev-issuer.js";
import { loadOrCreateSigningKey } from "../../src/identity/keys.js";
import { REDACTED } from "../../src/policy/redact.js";
import type { OnbehalfServer } from "../../src/server/app.js";
import { testGovernor } from "../support/governor.js";
import {
  CARD,
  LEAKY_TOOLS,
  type LeakyUpstream,
  registerLeakyTools,
  SSN,
  startLeakyUpstream,
} from "../support/leaky-mcp.js";
import { connectMcp } from "../support/mcp-client.js";
import { DEFAULT_RESOURCE, type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { startTestServer } from "../support/server.js";

const GATEWAY = "https://gateway.onbehalf.test";
const REDACT = ["ssn", "cards[*].number"];
/** Every leaky tool but one has its output redacted; plain_text_audited is only audited. */
const REDACTED_TOOLS = Object.keys(LEAKY_TOOLS).filter((n) => n !== "plain_text_audited");

/** Tool entries and the acme policy for tools named `<prefix><tool>`. */
function policyFor(prefix: string) {
  return {
    tools: Object.keys(LEAKY_TOOLS).map((n) => ({
      name: `${prefix}${n}`,
      required_scopes: ["customers:read"],
      redact: REDACT,
      ...(n === "notes_passed" ? { unparsed_output: "pass" as const } : {}),
    })),
    tenants: [
      {
        id: "acme",
        policy: {
          defaults: { "*": { permission: "allow" as const } },
          tools: Object.fromEntries(
            REDACTED_TOOLS.map((n) => [`${prefix}${n}`, { "*": { post_transform: "redact" as const } }]),
          ),
        },
      },
    ],
  };
}

const notice =
  /^\[withheld by onbehalf: (.+) from (leaky\.)?\w+, which cannot be checked for the fields policy redacts\]$/;
const textOf = (c: CallToolResult["content"][number] | undefined): string =>
  c?.type === "text" ? c.text : `(a ${c?.type ?? "missing"} part)`;
const parsed = (c: CallToolResult["content"][number] | undefined) => JSON.parse(textOf(c));
const redactedCustomer = (id = "c-1") => ({
  id,
  name: "Ada",
  ssn: REDACTED,
  cards: [{ number: REDACTED, brand: "visa" }],
});

/** Whether any part of `r` still shows the SSN or the card number, in text or in base64 data. */
function leaks(r: CallToolResult): boolean {
  const decoded = r.content.map((c) =>
    c.type === "image" || c.type === "audio"
      ? Buffer.from(c.data, "base64").toString()
      : c.type === "resource" && "blob" in c.resource
        ? Buffer.from(String(c.resource.blob), "base64").toString()
        : "",
  );
  const all = JSON.stringify(r) + decoded.join("");
  return all.includes(SSN) || all.includes(CARD);
}

/** What the model must see of each tool's result. */
const expectations: Record<string, (r: CallToolResult) => void> = {
  two_json_parts(r) {
    expect(r.content.map(parsed)).toEqual([redactedCustomer("c-1"), redactedCustomer("c-2")]);
  },
  json_and_note(r) {
    expect(parsed(r.content[0])).toEqual(redactedCustomer());
    expect(textOf(r.content[1])).toMatch(notice);
    expect(textOf(r.content[1]).match(notice)?.[1]).toBe("plain text");
  },
  embedded_json(r) {
    expect(r.content[0]).toMatchObject({
      type: "resource",
      resource: { uri: "crm://customers/c-1", mimeType: "application/json" },
    });
    const resource = (r.content[0] as { resource: { text: string } }).resource;
    expect(JSON.parse(resource.text)).toEqual(redactedCustomer());
  },
  embedded_blob(r) {
    expect(textOf(r.content[0]).match(notice)?.[1]).toBe(
      "an embedded resource (application/json) of binary data",
    );
  },
  structured_without_field(r) {
    expect(r.structuredContent).toEqual({ id: "c-1", name: "Ada" });
    expect(parsed(r.content[0])).toEqual(redactedCustomer());
  },
  structured(r) {
    expect(r.structuredContent).toEqual(redactedCustomer());
    expect(parsed(r.content[0])).toEqual(redactedCustomer());
  },
  plain_text(r) {
    expect(r.content).toHaveLength(1);
    expect(textOf(r.content[0]).match(notice)?.[1]).toBe("plain text");
  },
  image(r) {
    expect(r.content).toHaveLength(1);
    expect(textOf(r.content[0]).match(notice)?.[1]).toBe("an image (image/png)");
  },
};

function expectShown(tool: string, r: CallToolResult): void {
  expect(r.isError, textOf(r.content[0])).toBeFalsy();
  expect(leaks(r), JSON.stringify(r)).toBe(false);
  expectations[tool]?.(r);
}

describe("MCP gateway: redaction fails closed", () => {
  let idp: OidcProviderHandle;
  let leaky: LeakyUpstream;
  let server: OnbehalfServer;
  let client: Client;

  beforeAll(async () => {
    idp = await startOidcProvider();
    leaky = await startLeakyUpstream();
    server = await startTestServer(idp, {
      server: { port: 0, public_url: GATEWAY, admin_tokens: ["admin-token-for-tests-0123456789"] },
      issuers: [{ issuer: idp.issuer, audience: [DEFAULT_RESOURCE, `${GATEWAY}/mcp`], preset: "generic" }],
      ...policyFor("leaky."),
      upstreams: [{ name: "leaky", transport: "streamable-http", url: leaky.url, timeout_ms: 5_000 }],
    });
    const bearer = await idp.getToken({
      resource: `${GATEWAY}/mcp`,
      scope: "customers:read",
      claims: { sub: "alice", tenant: "acme" },
    });
    client = await connectMcp(server.url, bearer);
  });
  afterAll(async () => {
    await client?.close();
    await server?.close();
    await leaky?.stop();
    await idp?.close();
  });

  const call = async (tool: string) =>
    (await client.callTool({ name: `leaky.${tool}`, arguments: {} })) as CallToolResult;

  it("redacts each of two JSON text parts", async () => {
    expectShown("two_json_parts", await call("two_json_parts"));
  });

  it("redacts a JSON part and withholds the free-text note beside it", async () => {
    expectShown("json_and_note", await call("json_and_note"));
  });

  it("redacts an embedded resource whose text is JSON", async () => {
    expectShown("embedded_json", await call("embedded_json"));
  });

  it("withholds an embedded binary resource, which cannot be redacted", async () => {
    expectShown("embedded_blob", await call("embedded_blob"));
  });

  it("redacts the text part when structuredContent leaves the field out", async () => {
    expectShown("structured_without_field", await call("structured_without_field"));
  });

  it("redacts structuredContent and the text built from it", async () => {
    expectShown("structured", await call("structured"));
  });

  it("withholds a plain-text result, with a reason the model can read", async () => {
    expectShown("plain_text", await call("plain_text"));
  });

  it("withholds an image, which cannot be redacted", async () => {
    expectShown("image", await call("image"));
  });

  it("lets unparsed output through for a tool with unparsed_output: pass, and still redacts its JSON", async () => {
    const r = await call("notes_passed");
    expect(parsed(r.content[0])).toEqual(redactedCustomer());
    expect(textOf(r.content[1])).toBe(`Note: Ada's SSN ${SSN} was verified by phone.`);
  });

  it("redacts and withholds nothing when the post-transform is not redact", async () => {
    const r = await call("plain_text_audited");
    expect(textOf(r.content[0])).toBe(`Ada Lovelace, SSN ${SSN}, card ${CARD}`);
  });

  it("audits what it withheld", async () => {
    await call("json_and_note");
    await server.governor.flush();
    const { records } = await server.governor.queryAudit({ tool: "leaky.json_and_note", limit: 10 });
    const outcome = records.find((r) => r.kind === "outcome");
    expect(outcome?.reason).toBe("output redacted; withheld, as redaction cannot check it: plain text");
  });
});

describe("MCP server adapter (governedHandler): redaction fails closed", () => {
  let gov: Governor;
  let http: Server;
  let client: Client;

  beforeAll(async () => {
    const devKey = loadOrCreateSigningKey(
      join(mkdtempSync(join(tmpdir(), "onbehalf-redaction-")), "dev.jwk"),
    );
    ({ gov } = await testGovernor({ issuers: [devIssuerConfig(devKey.publicJwk)], ...policyFor("") }));
    const app = createMcpExpressApp();
    app.post(
      "/mcp",
      requireBearerAuth({ verifier: onbehalfVerifier(gov) }),
      async (req: IncomingMessage & { body?: unknown }, res: ServerResponse) => {
        const server = new McpServer({ name: "leaky-crm", version: "1.0.0" });
        registerLeakyTools(server, (name, handler) =>
          governedHandler(gov, name, handler, { agent: "support-bot" }),
        );
        const transport = new StreamableHTTPServerTransport({});
        res.on("close", () => void server.close());
        await server.connect(transport);
        await transport.handleRequest(req, res, req.body);
      },
    );
    http = await new Promise<Server>((resolve) => {
      const s: Server = app.listen(0, "127.0.0.1", () => resolve(s));
    });
    const bearer = mintDevToken(devKey, { sub: "alice", tenant: "acme", scopes: ["customers:read"] });
    client = new Client({ name: "support-bot", version: "1.0.0" });
    await client.connect(
      new StreamableHTTPClientTransport(
        new URL(`http://127.0.0.1:${(http.address() as AddressInfo).port}/mcp`),
        {
          requestInit: { headers: { authorization: `Bearer ${bearer}` } },
        },
      ),
    );
  });
  afterAll(async () => {
    await client?.close();
    await new Promise((resolve) => http?.close(resolve));
    await gov?.close();
  });

  it("redacts or withholds every part of every leaky result, as the gateway does", async () => {
    for (const tool of Object.keys(expectations)) {
      expectShown(tool, (await client.callTool({ name: tool, arguments: {} })) as CallToolResult);
    }
    const passed = (await client.callTool({ name: "notes_passed", arguments: {} })) as CallToolResult;
    expect(textOf(passed.content[1])).toContain(SSN);
  });
});
