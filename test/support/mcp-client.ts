/** The official MCP client, connected to a gateway's `/mcp` with a bearer token, as an agent connects. */
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

/**
 * A client named `name` (the agent the gateway audits), connected to `${url}/mcp` with `bearer`.
 *
 * @example
 * const client = await connectMcp(server.url, await idp.getToken({ resource: `${GATEWAY}/mcp`, scope: "customers:read" }));
 */
export async function connectMcp(url: string, bearer: string, name = "support-bot"): Promise<Client> {
  const client = new Client({ name, version: "1.0.0" });
  await client.connect(
    new StreamableHTTPClientTransport(new URL(`${url}/mcp`), {
      requestInit: { headers: { authorization: `Bearer ${bearer}` } },
    }),
  );
  return client;
}
