/**
 * Transport hygiene for `/mcp` (MCP Streamable HTTP, "Security Warning"): servers MUST validate `Origin` on
 * every request and answer 403 to one that is present and not expected, so a web page whose name was
 * rebound to this machine (DNS rebinding) cannot drive the gateway from the user's browser; the `Host` is
 * checked for the same reason. A request without `Origin` (any non-browser MCP client) is not a browser's
 * and passes that check.
 *
 * The SDK's transport options for this (`allowedOrigins`, `allowedHosts`, `enableDnsRebindingProtection`)
 * are deprecated in favour of middleware, compare strings exactly (`Host` with its port) and run only after
 * the gateway has authenticated the caller and opened a session; its middleware (`hostHeaderValidation`) is
 * Express's. This is the same check, port-agnostic as that middleware, run before anything else.
 */

/** What the guard accepts, read on each request (the listening address is known only once it listens). */
export interface TransportGuardOptions {
  /** `server.mcp_allowed_origins`: when set, the browser origins accepted besides `public_url`'s. */
  readonly allowedOrigins: readonly string[] | undefined;
  /** The address the server is bound to (`server.host`, `--host`). */
  readonly boundHost: string;
  /** `public_url` (else where it listens) and the MCP resource: their origins and hosts are always accepted. */
  readonly publicUrls: () => readonly string[];
}

/** The answer to a refused request: 403 with a JSON-RPC error that has no id, as the transport spec allows. */
export interface Refusal {
  readonly status: 403;
  readonly body: { jsonrpc: "2.0"; error: { code: number; message: string }; id: null };
}

/**
 * The check of one request's `Origin` and `Host`: null when it may go on, else the 403 to answer.
 *
 * @example
 * const guard = transportGuard({ allowedOrigins: undefined, boundHost: "127.0.0.1", publicUrls: () => [] });
 * guard({ host: "127.0.0.1:8787", origin: "http://evil.example" })?.status; // 403
 */
export function transportGuard(
  options: TransportGuardOptions,
): (headers: { host?: string | undefined; origin?: string | undefined }) => Refusal | null {
  const bound = hostnameOf(options.boundHost.includes(":") ? `[${options.boundHost}]` : options.boundHost);
  const loopbackBind = isLoopback(bound);
  const wildcardBind = isWildcard(options.boundHost);
  const listed = (options.allowedOrigins ?? []).map(originOf).filter((o): o is string => o !== null);
  // What the public URLs give (their origins and host names), parsed again only when they change.
  let known: { key: string; origins: string[]; hosts: Set<string> } | undefined;
  const publicOrigins = () => {
    const urls = options.publicUrls();
    const key = urls.join("\n");
    if (known?.key !== key) {
      const valid = urls.filter((u) => originOf(u) !== null);
      const hosts = new Set(valid.map((u) => new URL(u).hostname));
      if (!wildcardBind && bound !== null) hosts.add(bound);
      known = { key, origins: valid.map((u) => originOf(u) as string), hosts };
    }
    return known;
  };
  /** The last `Host` seen and its hostname: a client sends the same one on each request. */
  let lastHost: { host: string; hostname: string | null } = { host: "", hostname: null };
  return (headers) => {
    const { origins, hosts } = publicOrigins();
    const host = headers.host ?? "";
    if (host !== lastHost.host) lastHost = { host, hostname: hostnameOf(host) };
    const hostname = lastHost.hostname;
    if (hostname === null) return refuse("the request has no valid Host header");
    // Bound to every interface with no public URL: the names it is reached by are not known, so not checked.
    if (!wildcardBind || origins.length > 0) {
      if (!hosts.has(hostname) && !(loopbackBind && isLoopback(hostname))) {
        return refuse(
          `Host ${hostname} is not this server's (set server.public_url to the name clients use)`,
        );
      }
    }
    const origin = headers.origin;
    if (origin === undefined) return null;
    const normalized = originOf(origin);
    if (normalized !== null) {
      if (origins.includes(normalized) || listed.includes(normalized)) return null;
      if (options.allowedOrigins === undefined && loopbackBind && isLoopback(new URL(normalized).hostname)) {
        return null;
      }
    }
    return refuse(
      `Origin ${origin.slice(0, 200)} is not allowed to reach /mcp (list it in server.mcp_allowed_origins)`,
    );
  };
}

function refuse(message: string): Refusal {
  return { status: 403, body: { jsonrpc: "2.0", error: { code: -32000, message }, id: null } };
}

/** `scheme://host[:port]` of a URL or origin, ports and case normalized; null when it is not one. */
function originOf(value: string): string | null {
  try {
    const url = new URL(value);
    return url.protocol === "http:" || url.protocol === "https:" ? url.origin : null;
  } catch {
    return null;
  }
}

/** The hostname of a `Host` header value (`[::1]:8787` → `[::1]`), or null when it is not one. */
function hostnameOf(host: string): string | null {
  if (host === "") return null;
  try {
    return new URL(`http://${host}`).hostname;
  } catch {
    return null;
  }
}

function isLoopback(hostname: string | null): boolean {
  if (hostname === null) return false;
  return hostname === "localhost" || hostname === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

function isWildcard(host: string): boolean {
  return host === "0.0.0.0" || host === "::" || host === "[::]";
}
