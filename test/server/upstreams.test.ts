/** The gateway's upstream connections: exposed names, and a shared abort signal that collects no listeners. */
import { getEventListeners } from "node:events";
import { createServer, type Server } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UpstreamConfig } from "../../src/config/server.js";
import { generateSigningKey } from "../../src/identity/keys.js";
import { createOboMinter } from "../../src/server/obo.js";
import { fetchWithOwnSignal, Upstream } from "../../src/server/upstreams.js";

let http: Server;
let url = "";
beforeAll(async () => {
  http = createServer((req, res) => {
    if (req.url === "/hang") return; // never answers
    res.writeHead(200, { "content-type": "text/plain" }).end("ok");
  });
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  const a = http.address();
  url = `http://127.0.0.1:${typeof a === "object" && a ? a.port : 0}`;
});
afterAll(() => {
  http.closeAllConnections();
  http.close();
});

describe("fetchWithOwnSignal", () => {
  it("leaves no listener on the shared signal once each response has been read", async () => {
    const shared = new AbortController();
    for (let i = 0; i < 200; i++) {
      const res = await fetchWithOwnSignal(url, { signal: shared.signal });
      expect(await res.text()).toBe("ok");
    }
    expect(getEventListeners(shared.signal, "abort").length).toBeLessThanOrEqual(1);
    // many requests in flight at once still add one listener in all
    const responses = await Promise.all(
      Array.from({ length: 32 }, () => fetchWithOwnSignal(url, { signal: shared.signal })),
    );
    expect(getEventListeners(shared.signal, "abort").length).toBeLessThanOrEqual(1);
    await Promise.all(responses.map((r) => r.text()));
  });

  it("still aborts a request in flight when the shared signal aborts", async () => {
    const shared = new AbortController();
    const pending = fetchWithOwnSignal(`${url}/hang`, { signal: shared.signal });
    setTimeout(() => shared.abort(new Error("connection closed")), 20);
    await expect(pending).rejects.toThrow("connection closed");
  });
});

describe("upstream tool names", () => {
  it("joins prefix and tool with the configured separator, for clients whose tool names allow no dots", async () => {
    const config = UpstreamConfig.parse({
      name: "mail",
      transport: "stdio",
      command: process.execPath,
      args: ["--import", "tsx", "test/fixtures/stdio-upstream.ts"],
      prefix: "email",
      separator: "__",
    });
    const upstream = new Upstream(config, createOboMinter(generateSigningKey(), "https://gw.test"), () => {});
    try {
      const names = (await upstream.tools()).map((t) => t.name);
      expect(names.length).toBeGreaterThan(0);
      for (const name of names) expect(name).toMatch(/^email__[A-Za-z0-9_-]+$/);
    } finally {
      await upstream.close();
    }
  });
});
