/**
 * The one error type onbehalf throws. Every failure carries a stable `code` (part of the public API: match on
 * it, never on the message), an HTTP `status` for the server edge, and an optional OAuth wire error.
 *
 * This module imports nothing from the rest of the project: every concern may import it.
 */

/** Stable error codes. Adding a code is a minor change; renaming or removing one is breaking. */
export type ErrorCode =
  // identity: the token and its issuer
  | "ERR_TOKEN_MISSING"
  | "ERR_TOKEN_MALFORMED"
  | "ERR_TOKEN_TOO_LARGE"
  | "ERR_TOKEN_ALG_NOT_ALLOWED"
  | "ERR_TOKEN_HEADER_REJECTED"
  | "ERR_TOKEN_SIGNATURE_INVALID"
  | "ERR_TOKEN_EXPIRED"
  | "ERR_TOKEN_NOT_YET_VALID"
  | "ERR_TOKEN_ISSUED_IN_FUTURE"
  | "ERR_TOKEN_ISSUER_UNKNOWN"
  | "ERR_TOKEN_AUDIENCE_INVALID"
  | "ERR_TOKEN_TYPE_INVALID"
  | "ERR_TOKEN_CLAIM_INVALID"
  | "ERR_JWKS_NO_MATCHING_KEY"
  | "ERR_JWKS_UNAVAILABLE"
  | "ERR_DISCOVERY_FAILED"
  // context
  | "ERR_NO_IDENTITY"
  // policy and enforcement
  | "ERR_POLICY_DENIED"
  | "ERR_RATE_LIMITED"
  | "ERR_APPROVAL_REQUIRED"
  | "ERR_OUTPUT_BLOCKED"
  // configuration and usage
  | "ERR_CONFIG_INVALID"
  | "ERR_INVALID_ARGUMENT"
  | "ERR_NOT_FOUND"
  | "ERR_CONFLICT"
  /** A console change without its session's CSRF token, or a sign-in posted from another site. */
  | "ERR_CSRF"
  // infrastructure
  | "ERR_AUDIT_UNAVAILABLE"
  | "ERR_LIMITS_UNAVAILABLE"
  | "ERR_UPSTREAM_FAILED"
  | "ERR_CLOSED";

/** OAuth 2.0 (RFC 6749 §5.2, RFC 6750, RFC 8693, RFC 8707) wire errors the server edge maps codes onto. */
export type OAuthError =
  | "invalid_token"
  | "insufficient_scope"
  | "invalid_request"
  | "invalid_grant"
  | "invalid_client"
  | "unsupported_grant_type"
  | "invalid_scope"
  | "invalid_target"
  /** RFC 9396: an `authorization_details` entry of an unknown type, or one that does not validate. */
  | "invalid_authorization_details";

const STATUS: Record<ErrorCode, number> = {
  ERR_TOKEN_MISSING: 401,
  ERR_TOKEN_MALFORMED: 401,
  ERR_TOKEN_TOO_LARGE: 401,
  ERR_TOKEN_ALG_NOT_ALLOWED: 401,
  ERR_TOKEN_HEADER_REJECTED: 401,
  ERR_TOKEN_SIGNATURE_INVALID: 401,
  ERR_TOKEN_EXPIRED: 401,
  ERR_TOKEN_NOT_YET_VALID: 401,
  ERR_TOKEN_ISSUED_IN_FUTURE: 401,
  ERR_TOKEN_ISSUER_UNKNOWN: 401,
  ERR_TOKEN_AUDIENCE_INVALID: 401,
  ERR_TOKEN_TYPE_INVALID: 401,
  ERR_TOKEN_CLAIM_INVALID: 401,
  ERR_JWKS_NO_MATCHING_KEY: 401,
  ERR_JWKS_UNAVAILABLE: 503,
  ERR_DISCOVERY_FAILED: 503,
  ERR_NO_IDENTITY: 401,
  ERR_POLICY_DENIED: 403,
  ERR_RATE_LIMITED: 429,
  ERR_APPROVAL_REQUIRED: 403,
  ERR_OUTPUT_BLOCKED: 403,
  ERR_CONFIG_INVALID: 400,
  ERR_INVALID_ARGUMENT: 400,
  ERR_NOT_FOUND: 404,
  ERR_CONFLICT: 409,
  ERR_CSRF: 403,
  ERR_AUDIT_UNAVAILABLE: 503,
  ERR_LIMITS_UNAVAILABLE: 503,
  ERR_UPSTREAM_FAILED: 502,
  ERR_CLOSED: 503,
};

/** Options for {@link OnbehalfError}. */
export interface OnbehalfErrorOptions {
  /** The underlying error, kept for logs; never shown to end users verbatim. */
  cause?: unknown;
  /** Structured detail: a decision record, config issues, a file position. */
  details?: unknown;
  /** Override the OAuth wire error the server edge sends. */
  oauth?: OAuthError;
}

/**
 * Base class of every error onbehalf throws.
 *
 * @example
 * try { await gov.verify(header) } catch (e) {
 *   if (e instanceof OnbehalfError && e.code === "ERR_TOKEN_EXPIRED") reauthenticate();
 * }
 */
export class OnbehalfError extends Error {
  override readonly name = "OnbehalfError";
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: unknown;
  readonly oauth: OAuthError | undefined;

  constructor(code: ErrorCode, message: string, options: OnbehalfErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.status = STATUS[code];
    this.details = options.details;
    this.oauth = options.oauth ?? defaultOAuthError(code, this.status);
  }

  /** The JSON error body of the HTTP API: `{error: {code, message}}`. */
  toJSON(): { error: { code: ErrorCode; message: string } } {
    return { error: { code: this.code, message: this.message } };
  }
}

function defaultOAuthError(code: ErrorCode, status: number): OAuthError | undefined {
  if (status === 401) return "invalid_token";
  if (code === "ERR_INVALID_ARGUMENT") return "invalid_request";
  return undefined;
}

/** True when `e` is an {@link OnbehalfError}, optionally with the given code. */
export function isOnbehalfError(e: unknown, code?: ErrorCode): e is OnbehalfError {
  return e instanceof OnbehalfError && (code === undefined || e.code === code);
}
