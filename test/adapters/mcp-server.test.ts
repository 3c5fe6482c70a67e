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
import { z } from "zod";
import { governedHandler, onbehalfVerifier } from "../../src/adapters/mcp-server.js";
import { delegationIssuerConfig, mintDelegation } from "../../src/context/delegation.js";
import type { Governor } from "../../src/govern/governor.js";
import { devIssuerConfig, mintDevToken } from "../../src/identity/dev-issuer.js";
import { loadOrCreateSigningKey } from "../../src/identity/keys.js";
import { testGovernor } from "../support/governor.js";
import { attemptsOf, auditOf, customer, handOffAttempts, tick } from "./support.js";

const keys = mkdtempSync(join(tmpdir(), "onbehalf-mcp-"));
const devKey = loadOrCreateSigningKey(join(keys, "dev.jwk"));
const delegationKey = loadOrCreateSigningKey(join(keys, "delegation.jwk"));
const ISSUER = "https://onbehalf.test";

let gov: Governor;
let http: Server;
let url: URL;
const ran: string[] = [];

/** An MCP server with the SDK's bearer middleware, onbehalf's verifier and two governed tools. */
function mcpServer(): McpServer {
  const server = new McpServer({ name: "crm", version: "1.0.0" });
  server.registerTool(
    "get_customer",
    { description: "Look up a customer", inputSchema: { id: z.string() } },
    governedHandler(
      gov,
      "get_customer",
      async ({ id }) => {
        await tick();
        ran.push(`get_customer:${id}`);
        return { content: [{ type: "text", text: JSON.stringify({ ...customer, id }) }] };
      },
      { agent: "support-bot" },
    ),
  );
  server.registerTool(
    "read_email",
    { description: "Read a mailbox", inputSchema: { mailbox: z.string() } },
    governedHandler(
      gov,
      "read_email",
      async ({ mailbox }) => {
        await tick();
        ran.push(`read_email:${mailbox}`);
        return { content: [{ type: "text", text: `3 new messages in ${mailbox}` }] };
      },
      { agent: "support-bot" },
    ),
  );
  return server;
}

beforeAll(async () => {
  ({ gov } = await testGovernor(
    { issuers: [devIssuerConfig(devKey.publicJwk)] },
    { extraIssuers: [delegationIssuerConfig(ISSUER, delegationKey.publicJwk)] },
  ));
  const app = createMcpExpressApp();
  app.post(
    "/mcp",
    requireBearerAuth({ verifier: onbehalfVerifier(gov) }),
    async (req: IncomingMessage & { body?: unknown }, res: ServerResponse) => {
      const server = mcpServer();
      const transport = new StreamableHTTPServerTransport({}); // stateless;
      res.on("close", () => void server.close());
      await server.connect(transport);
      await transport.handleRequest(req, res, req.body);
    },
  );
  http = await new Promise<Server>((resolve) => {
    const s: Server = app.listen(0, "127.0.0.1", () => resolve(s));
  });
  url = new URL(`http://127.0.0.1:${(http.address() as AddressInfo).port}/mcp`);
});

afterAll(async () => {
  await new Promise((resolve) => http.close(resolve));
  await gov.close();
});

function token(user: string, scopes: string[]): string {
  return mintDevToken(devKey, { sub: user, tenant: "acme", scopes, email: `${user}@acme.test` });
}

/** An MCP client (the official SDK's) sending `bearer`. */
async function connect(bearer: string | undefined): Promise<Client> {
  const client = new Client({ name: "support-bot", version: "1.0.0" });
  const headers: Record<string, string> = bearer === undefined ? {} : { authorization: `Bearer ${bearer}` };
  await client.connect(new StreamableHTTPClientTransport(url, { requestInit: { headers } }));
  return client;
}

async function call(client: Client, name: string, args: Record<string, unknown>): Promise<CallToolResult> {
  return (await client.callTool({ name, arguments: args })) as CallToolResult;
}

const text = (r: CallToolResult): string => r.content.map((c) => (c.type === "text" ? c.text : "")).join("");

describe("MCP server adapter", () => {
  it("governs tools as the human from the bearer token; a delegated sub-agent's over-reach is denied", async () => {
    const alice = await connect(token("alice", ["customers:read", "email.read"]));
    const found = await call(alice, "get_customer", { id: "c-1" });
    expect(JSON.parse(text(found))).toMatchObject({ id: "c-1", ssn: "[REDACTED]" });
    // the support bot hands the mail task to a mailer, with a delegation token limited to email.read
    const principal = await gov.verify(token("alice", ["customers:read", "email.read"]));
    const delegated = mintDelegation(
      delegationKey,
      ISSUER,
      {
        principal,
        chain: ["support-bot"],
        tiers: ["interactive"],
        scopes: new Set(principal.scopes),
        traceId: "t-1",
      },
      "mailer",
      ["email.read"],
      "subagent",
      Date.now(),
    );
    const mailer = await connect(delegated.token);
    expect(text(await call(mailer, "read_email", { mailbox: "alice@acme.test" }))).toContain(
      "3 new messages",
    );
    const denied = await call(mailer, "get_customer", { id: "c-1" });
    expect(denied.isError).toBe(true);
    expect(text(denied)).toContain("onbehalf refused get_customer: missing_scope");
    expect(await attemptsOf(gov, "alice")).toEqual(handOffAttempts("support-bot"));
    const records = await auditOf(gov, "alice");
    expect(records.every((r) => r.source === "mcp" && r.email === "alice@acme.test")).toBe(true);
    await Promise.all([alice.close(), mailer.close()]);
  });

  it("decides a delegation token's calls under the task capabilities signed into it", async () => {
    const principal = await gov.verify(token("erin", ["customers:read", "email.read"]));
    const delegated = mintDelegation(
      delegationKey,
      ISSUER,
      {
        principal,
        chain: ["support-bot"],
        tiers: ["interactive"],
        scopes: new Set(principal.scopes),
        traceId: "t-2",
        capabilities: [
          {
            agent: "mailer",
            tools: [{ tool: "read_email", when: "args.mailbox == task.mailbox" }],
            data: { mailbox: "erin@acme.test" },
          },
        ],
      },
      "mailer",
      undefined,
      "subagent",
      Date.now(),
    );
    const mailer = await connect(delegated.token);
    expect(text(await call(mailer, "read_email", { mailbox: "erin@acme.test" }))).toContain("3 new messages");
    const other = await call(mailer, "read_email", { mailbox: "boss@acme.test" });
    expect(other.isError).toBe(true);
    expect(text(other)).toContain("capability_deny");
    const lookup = await call(mailer, "get_customer", { id: "c-1" });
    expect(text(lookup)).toContain("capability_deny"); // its scopes would allow it
    await mailer.close();
  });

  it("never lets identity bleed between concurrent calls for different users", async () => {
    const [carol, dave] = await Promise.all([
      connect(token("carol", ["email.read"])),
      connect(token("dave", ["customers:read"])),
    ]);
    const results = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        i % 2 === 0
          ? call(carol, "read_email", { mailbox: `carol-${i}` })
          : call(dave, "read_email", { mailbox: `dave-${i}` }),
      ),
    );
    expect(results.map((r) => r.isError === true)).toEqual([false, true, false, true, false, true]);
    expect(ran.filter((r) => r.includes("dave"))).toEqual([]);
    expect((await attemptsOf(gov, "carol")).map((r) => r[1])).toEqual(["allow", "allow", "allow"]);
    expect((await attemptsOf(gov, "dave")).map((r) => r[2])).toEqual([
      "missing_scope",
      "missing_scope",
      "missing_scope",
    ]);
    await Promise.all([carol.close(), dave.close()]);
  });

  it("refuses a request without a valid token at the bearer middleware (401)", async () => {
    await expect(connect(undefined)).rejects.toThrow(/401|invalid_token/i);
    await expect(connect("not-a-token")).rejects.toThrow(/401|invalid_token/i);
  });

  it("fails closed: a handler reached with no principal never runs", async () => {
    let runs = 0;
    const handler = governedHandler(gov, "get_customer", async (_args: { id: string }, _extra: object) => {
      runs++;
      return { content: [] };
    });
    const result = await handler({ id: "c-1" }, {});
    expect(runs).toBe(0);
    expect(result).toMatchObject({ isError: true });
    expect(text(result)).toContain("ERR_NO_IDENTITY");
  });
});
