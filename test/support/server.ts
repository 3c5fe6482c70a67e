/**
 * A started control plane for HTTP tests: a real server on a free port, trusting a real oidc-provider, with
 * SQLite audit (or any config the test gives) in a temporary directory.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ConfigInput } from "../../src/config/schema.js";
import { type OnbehalfServer, type ServerOptions, startServer } from "../../src/server/app.js";
import { DEFAULT_RESOURCE, type OidcProviderHandle } from "./oidc.js";

export const ADMIN = "admin-token-for-tests-0123456789";

export const SERVER_TOOLS = [
  { name: "get_customer", required_scopes: ["customers:read"], redact: ["ssn", "cards[*].number"] },
  { name: "issue_refund", required_scopes: ["orders:write"] },
  { name: "read_email", required_scopes: ["email.read"] },
];

export const ACME_POLICY = {
  defaults: { "*": { permission: "allow" as const, post_transform: "redact" as const } },
  rules: [
    {
      id: "big-refunds",
      tools: ["issue_refund"],
      when: "args.amount > 500",
      effect: "ask" as const,
      reason: "refunds over 500 need a manager",
    },
  ],
};

/** The config of a test server trusting `idp`. Paths go to a fresh temp dir. */
export function serverConfig(idp: OidcProviderHandle, overrides: Partial<ConfigInput> = {}): ConfigInput {
  const dir = mkdtempSync(join(tmpdir(), "onbehalf-server-"));
  return {
    server: { port: 0, admin_tokens: [ADMIN], signing_key: join(dir, "server.jwk") },
    issuers: [{ issuer: idp.issuer, audience: DEFAULT_RESOURCE, preset: "generic" }],
    tools: SERVER_TOOLS,
    tenants: [
      { id: "acme", policy: ACME_POLICY },
      { id: "globex", policy: ACME_POLICY },
    ],
    audit: { store: `sqlite:${join(dir, "audit.db")}`, signing_key: join(dir, "audit.jwk"), flush_ms: 1 },
    ...overrides,
  };
}

export async function startTestServer(
  idp: OidcProviderHandle,
  overrides: Partial<ConfigInput> = {},
  options: Partial<ServerOptions> = {},
): Promise<OnbehalfServer> {
  // Quiet unless a test asks for the request log.
  return startServer({
    config: serverConfig(idp, overrides),
    warn: () => {},
    log: { level: "silent" },
    ...options,
  });
}

/** A real access token from the provider for a human in a tenant. */
export function userToken(
  idp: OidcProviderHandle,
  sub: string,
  scope = "customers:read orders:write email.read",
  claims: Record<string, unknown> = {},
): Promise<string> {
  return idp.getToken({ scope, claims: { sub, tenant: "acme", email: `${sub}@acme.test`, ...claims } });
}

/** JSON over HTTP with an optional bearer. */
export async function call(
  url: string,
  method: string,
  path: string,
  options: {
    token?: string;
    body?: unknown;
    raw?: string;
    contentType?: string;
    headers?: Record<string, string>;
  } = {},
  // biome-ignore lint/suspicious/noExplicitAny: tests read response bodies field by field
): Promise<{ status: number; body: any; headers: Headers }> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.token !== undefined) headers["authorization"] = `Bearer ${options.token}`;
  let body: string | undefined;
  if (options.raw !== undefined) {
    body = options.raw;
    headers["content-type"] = options.contentType ?? "application/json";
  } else if (options.body !== undefined) {
    body = JSON.stringify(options.body);
    headers["content-type"] = "application/json";
  }
  const res = await fetch(`${url}${path}`, { method, headers, ...(body === undefined ? {} : { body }) });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text === "" ? null : JSON.parse(text);
  } catch {
    // not JSON (metrics)
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

/** The value of one sample of `GET /metrics`, e.g. `onbehalf_state_evictions_total{what="mcp_session",why="idle"}`; 0 when absent. */
export async function metricValue(url: string, sample: string): Promise<number> {
  const text = (await call(url, "GET", "/metrics")).body as string;
  const line = text.split("\n").find((l) => l.startsWith(`${sample} `));
  return line === undefined ? 0 : Number(line.split(" ").at(-1));
}
