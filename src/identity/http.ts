/**
 * Fetching issuer metadata and key sets: HTTPS only (plain HTTP on loopback, or when an issuer explicitly
 * allows it), a 5 s timeout, a 1 MiB body cap, no redirects, JSON objects only. Every failure is an
 * `OnbehalfError` with the caller's code, so a fetch problem can never look like a verified token.
 */
import { isFetchableUrl } from "../config/issuer.js";
import { type ErrorCode, OnbehalfError } from "../errors.js";

/** Per-request limits. */
export const FETCH_TIMEOUT_MS = 5_000;
export const FETCH_MAX_BYTES = 1_048_576;

/** Options of {@link fetchJsonObject}. */
export interface FetchJsonOptions {
  readonly fetch: typeof fetch;
  /** What is fetched, for messages: "the JWKS of https://idp.example". */
  readonly what: string;
  /** The code every failure carries. */
  readonly code: ErrorCode;
  readonly allowInsecureHttp: boolean;
  /** Aborts the request early (the identity's close()). */
  readonly signal?: AbortSignal;
  readonly timeoutMs?: number;
  readonly maxBytes?: number;
}

/**
 * GET a URL and parse its body as a JSON object, within the limits above.
 *
 * @example
 * const doc = await fetchJsonObject(url, { fetch, what: "discovery", code: "ERR_DISCOVERY_FAILED", allowInsecureHttp: false });
 */
export async function fetchJsonObject(
  url: string,
  options: FetchJsonOptions,
): Promise<Record<string, unknown>> {
  const fail = (why: string, cause?: unknown): OnbehalfError =>
    new OnbehalfError(
      options.code,
      `cannot load ${options.what} from ${url}: ${why}`,
      cause ? { cause } : {},
    );
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (e) {
    throw fail("not a valid URL", e);
  }
  if (!isFetchableUrl(parsed, options.allowInsecureHttp)) {
    throw fail("only https:// is fetched (http:// only on loopback, or with allow_insecure_http: true)");
  }
  const timeout = AbortSignal.timeout(options.timeoutMs ?? FETCH_TIMEOUT_MS);
  const signal = options.signal ? AbortSignal.any([timeout, options.signal]) : timeout;
  const maxBytes = options.maxBytes ?? FETCH_MAX_BYTES;
  let text: string;
  try {
    const response = await options.fetch(parsed, {
      method: "GET",
      headers: { accept: "application/json" },
      redirect: "error",
      signal,
    });
    if (!response.ok) {
      await response.body?.cancel().catch(() => undefined);
      throw fail(`HTTP ${response.status}`);
    }
    const declared = Number(response.headers.get("content-length") ?? "NaN");
    if (declared > maxBytes) {
      await response.body?.cancel().catch(() => undefined);
      throw fail(`the response is ${declared} bytes, over the ${maxBytes}-byte limit`);
    }
    text = await readCapped(response, maxBytes, () =>
      fail(`the response is over the ${maxBytes}-byte limit`),
    );
  } catch (e) {
    if (e instanceof OnbehalfError) throw e;
    const reason = timeout.aborted
      ? `no answer within ${options.timeoutMs ?? FETCH_TIMEOUT_MS} ms`
      : errorText(e);
    throw fail(reason, e);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw fail("the response is not JSON", e);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value))
    throw fail("the response is not a JSON object");
  return value as Record<string, unknown>;
}

async function readCapped(response: Response, maxBytes: number, tooLarge: () => Error): Promise<string> {
  if (response.body === null) return "";
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw tooLarge();
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString("utf8");
}

function errorText(e: unknown): string {
  if (e instanceof Error) {
    const cause = e.cause instanceof Error ? `: ${e.cause.message}` : "";
    return `${e.message}${cause}`;
  }
  return String(e);
}
