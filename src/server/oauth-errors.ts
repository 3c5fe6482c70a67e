/**
 * The token endpoint's errors as OAuth 2.0 says (RFC 6749 §5.2, RFC 8693 §2.2.2): a JSON object with `error` and
 * `error_description`, `Cache-Control: no-store`, status 400 — `invalid_client` is 401 with a `WWW-Authenticate:
 * Basic` challenge when the client tried HTTP Basic (as §5.2 requires), 400 when it authenticated in the body.
 * Only `/v1/token` answers this way; the rest of the API keeps `{error: {code, message}}`.
 */
import type { FastifyReply } from "fastify";
import { type OAuthError, OnbehalfError } from "../errors.js";
import { headerSafe } from "./http.js";

/** What the token endpoint answers a failed request with. */
export interface TokenError {
  readonly status: number;
  readonly error: string;
  readonly description: string;
}

/**
 * The OAuth error for whatever a token request failed with. A subject or actor token that does not verify
 * is `invalid_request` (RFC 8693 §2.2.2), not a 401: the request carried it as a parameter.
 *
 * @example
 * tokenErrorOf(new OnbehalfError("ERR_TOKEN_EXPIRED", "expired")); // { status: 400, error: "invalid_request", … }
 */
export function tokenErrorOf(e: unknown, basic = false): TokenError {
  if (!(e instanceof OnbehalfError)) {
    return { status: 500, error: "server_error", description: "internal error" };
  }
  const code: OAuthError | undefined = e.oauth;
  if (code === "invalid_client") return { status: basic ? 401 : 400, error: code, description: e.message };
  if (e.status >= 500) return { status: e.status, error: "temporarily_unavailable", description: e.message };
  const wire =
    code === "unsupported_grant_type" ||
    code === "invalid_scope" ||
    code === "invalid_target" ||
    code === "invalid_grant" ||
    code === "invalid_authorization_details"
      ? code
      : "invalid_request";
  return { status: 400, error: wire, description: e.message };
}

/** Send `e` as the token endpoint's error; `basic`: the client tried HTTP Basic (its 401 names that scheme). */
export function sendTokenError(reply: FastifyReply, e: unknown, basic: boolean): FastifyReply {
  const t = tokenErrorOf(e, basic);
  if (t.status >= 500 && !(e instanceof OnbehalfError)) reply.log.error(e);
  noStore(reply);
  if (t.status === 401) reply.header("www-authenticate", 'Basic realm="onbehalf", charset="UTF-8"');
  return reply.code(t.status).send({ error: t.error, error_description: headerSafe(t.description, 1000) });
}

/** RFC 6749 §5.1: token responses are never cached. */
export function noStore(reply: FastifyReply): void {
  reply.header("cache-control", "no-store");
  reply.header("pragma", "no-cache");
}

/** A token request error with its OAuth code. */
export function oauthError(error: OAuthError, description: string): OnbehalfError {
  return new OnbehalfError("ERR_INVALID_ARGUMENT", description, { oauth: error });
}
