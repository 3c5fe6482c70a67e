/**
 * An HTTP proxy that adds `Authorization: Bearer <token>` to every request it forwards, and otherwise passes
 * requests and streamed answers through unchanged (`Host` and `Origin` included). A stand-in for the OAuth
 * half of an MCP client, in front of a client that has none: the official conformance suite's CLI connects
 * without credentials, while `/mcp` (rightly) serves nobody anonymous.
 */
import { createServer, request, type Server } from "node:http";

export interface BearerProxy {
  /** `http://localhost:<port>`. */
  readonly url: string;
  close(): Promise<void>;
}

export async function startBearerProxy(target: string, token: () => string): Promise<BearerProxy> {
  const to = new URL(target);
  const server: Server = createServer((req, res) => {
    const upstream = request(
      {
        host: to.hostname,
        port: to.port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, authorization: `Bearer ${token()}` },
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on("error", () => res.destroy());
    res.on("close", () => upstream.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    url: `http://localhost:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
