/**
 * HTTP plumbing shared by the routes: the error body `{error: {code, message}}`, OAuth headers on 401/403,
 * body validation with messages that say which field is wrong, and bearer/admin authentication.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { FastifyReply, FastifyRequest } from "fastify";
import type { z } from "zod";
import { type DelegationClaims, delegationOf } from "../context/delegation.js";
import { type ErrorCode, OnbehalfError } from "../errors.js";
import type { Governor } from "../govern/governor.js";
import type { Principal } from "../identity/principal.js";

/** The authenticated caller of a request. */
export interface Caller {
  readonly principal: Principal;
  /** Set when the bearer is an onbehalf delegation token: the chain, tiers and trace it carries, signed. */
  readonly delegation: DelegationClaims | null;
}

/** Send an OnbehalfError (or anything else, as a 500 without details) in the API's error shape. */
export function sendError(reply: FastifyReply, e: unknown): FastifyReply {
  const err = e instanceof OnbehalfError ? e : null;
  if (err === null) {
    reply.log.error(e);
    return reply.code(500).send({ error: { code: "ERR_INTERNAL", message: "internal error" } });
  }
  if (err.status === 401) {
    reply.header(
      "www-authenticate",
      `Bearer error="invalid_token", error_description="${headerSafe(err.message)}"`,
    );
  } else if (err.oauth === "insufficient_scope") {
    reply.header("www-authenticate", `Bearer error="insufficient_scope"`);
  }
  return reply.code(err.status).send(err.toJSON());
}

/** A 4xx with our error shape, for problems found while handling a request. */
export function httpError(code: ErrorCode, message: string): OnbehalfError {
  return new OnbehalfError(code, message);
}

/** Validate a body with a zod schema; the error names each wrong field. */
export function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  if (body === undefined || body === null) {
    throw new OnbehalfError(
      "ERR_INVALID_ARGUMENT",
      "the request needs a JSON body (Content-Type: application/json)",
    );
  }
  const parsed = schema.safeParse(body);
  if (parsed.success) return parsed.data;
  throw invalidRequest(parsed.error);
}

/** The 400 for a body that does not validate: every wrong field named, with what is wrong with it. */
export function invalidRequest(error: z.ZodError): OnbehalfError {
  return new OnbehalfError("ERR_INVALID_ARGUMENT", `invalid request: ${describeIssues(error)}`);
}

/** Every wrong field of a validated value (`where` names the whole value), with what is wrong with it. */
export function describeIssues(error: z.ZodError, where = "body"): string {
  return error.issues
    .map((i) => {
      const at = i.path.length > 0 ? i.path.join(".") : where;
      return i.code === "unrecognized_keys"
        ? `${at}: unknown field ${i.keys.map((k) => JSON.stringify(k)).join(", ")}`
        : `${at}: ${i.message}`;
    })
    .join("; ");
}

/** Verify the request's bearer token (an IdP token or an onbehalf delegation token). */
export async function authenticate(
  gov: Governor,
  delegationIssuer: string,
  req: FastifyRequest,
): Promise<Caller> {
  const principal = await gov.verify(req.headers.authorization);
  return { principal, delegation: principal.issuer === delegationIssuer ? delegationOf(principal) : null };
}

/** Compares bearer tokens with the configured admin tokens in constant time; the admin's id, or null. */
export function adminCheck(tokens: readonly string[]): (req: FastifyRequest) => string | null {
  const allowed = tokens
    .filter((t) => t !== "")
    .map((t) => ({
      bytes: Buffer.from(t),
      id: `admin:${createHash("sha256").update(t).digest("hex").slice(0, 8)}`,
    }));
  return (req) => {
    const header = req.headers.authorization;
    if (typeof header !== "string" || !/^bearer /i.test(header)) return null;
    const given = Buffer.from(header.slice(7).trim());
    let who: string | null = null;
    for (const t of allowed)
      if (t.bytes.length === given.length && timingSafeEqual(t.bytes, given)) who = t.id;
    return who;
  };
}

/** Refuse with 401 unless the caller presents an admin token; returns who it is (`admin:<fingerprint>`). */
export function requireAdmin(adminOf: (req: FastifyRequest) => string | null, req: FastifyRequest): string {
  const who = adminOf(req);
  if (who === null) {
    throw new OnbehalfError(
      "ERR_TOKEN_MISSING",
      "this endpoint needs an admin token: Authorization: Bearer <admin token>",
    );
  }
  return who;
}

/**
 * Text made fit for a quoted-string in a header value: printable ASCII only. Node refuses to send anything
 * outside Latin-1 (a 500 instead of the 401 being answered) and sends Latin-1 as raw bytes no client reads
 * the same way; control characters would split the header, `"` and `\` end the quoted-string. So every
 * character outside 0x20–0x7E becomes `?`, `"` and `\` become `'`, and the result is at most `max` long.
 *
 * @example
 * headerSafe('the token iss "https://idp.example/\u2603" is not trusted'); // "the token iss 'https://idp.example/?' is not trusted"
 */
export function headerSafe(text: string, max = 200): string {
  return text
    .replace(/[^\x20-\x7e]/gu, "?")
    .replace(/["\\]/g, "'")
    .slice(0, max);
}
