/**
 * The console's calls to its server: same origin, the session cookie sent by the browser, the CSRF token (kept
 * in memory only, from sign-in or `/ui/api/me`) on every change. Errors carry the server's stable code.
 */
let csrf: string | null = null;

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export function setCsrf(token: string | null): void {
  csrf = token;
}

export interface Me {
  readonly role: "admin" | "approver";
  readonly tenant: string | null;
  readonly who: string;
  readonly csrf: string;
  readonly expires_at: string;
}

/** GET (a read) or a change (POST, DELETE) with the CSRF header. */
export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET" && csrf !== null) headers["x-csrf-token"] = csrf;
  const res = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  if (res.status === 204) return undefined as T;
  const json = (await res.json().catch(() => null)) as { error?: { code: string; message: string } } | null;
  if (!res.ok) {
    throw new ApiError(
      res.status,
      json?.error?.code ?? "ERR_HTTP",
      json?.error?.message ?? `HTTP ${res.status}`,
    );
  }
  return json as T;
}

/** A query string of the non-empty values. */
export function query(values: Record<string, string | number | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(values)) if (v !== undefined && v !== "") q.set(k, String(v));
  const s = q.toString();
  return s === "" ? "" : `?${s}`;
}
