/** The MCP server example of docs/frameworks.md (the region between the markers is the doc's code block). */
// #region doc
import type { IncomingMessage, ServerResponse } from "node:http";
import { requireBearerAuth } from "@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js";
import { createMcpExpressApp } from "@modelcontextprotocol/sdk/server/express.js";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { z } from "zod";
import { governedHandler, onbehalfVerifier } from "../../../src/adapters/mcp-server.js";
import type { Governor } from "../../../src/index.js";

export function crmServer(gov: Governor) {
  const app = createMcpExpressApp();
  app.post(
    "/mcp",
    requireBearerAuth({ verifier: onbehalfVerifier(gov) }),
    async (req: IncomingMessage & { body?: unknown }, res: ServerResponse) => {
      const server = new McpServer({ name: "crm", version: "1.0.0" });
      server.registerTool(
        "get_customer",
        { description: "Look up a customer by id", inputSchema: { id: z.string() } },
        governedHandler(gov, "get_customer", async ({ id }) => ({
          content: [{ type: "text", text: JSON.stringify({ id, name: "Ada", ssn: "078-05-1120" }) }],
        })),
      );
      const transport = new StreamableHTTPServerTransport({}); // stateless: one server per request
      res.on("close", () => void server.close());
      await server.connect(transport);
      await transport.handleRequest(req, res, req.body);
    },
  );
  return app;
}
// #endregion
