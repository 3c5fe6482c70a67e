/**
 * Console sessions: who signed in to `/ui`, as what, until when, and the CSRF token each of their changes must
 * carry. The session id travels only in an HttpOnly, SameSite=Strict cookie scoped to `/ui` (Secure behind
 * HTTPS); the CSRF token only in the `x-csrf-token` header, which a page of another site cannot set. Neither is
 * ever in a URL or in browser storage. Sessions live in the state store (`limits.store`): in this instance's
 * memory, or in Redis, where every instance sharing it knows them — a browser signed in (or out) at one
 * instance is signed in (or out) at all of them. A store that cannot answer is a 503, never a session.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { FastifyReply, FastifyRequest } from "fastify";
import { OnbehalfError } from "../../errors.js";
import type { Principal } from "../../identity/principal.js";
import type { StateStore } from "../state.js";

/** `admin`: every tenant, every page. `approver`: the inbox and the records of their own tenant only. */
export type ConsoleRole = "admin" | "approver";

export interface ConsoleSession {
  readonly csrf: string;
  readonly role: ConsoleRole;
  /** The approver's tenant; null for an admin. */
  readonly tenant: string | null;
  /** `admin:<token fingerprint>`, or the user id of the human who signed in. */
  readonly who: string;
  /** The verified human (IdP sign-in), checked again on every request; null for an admin token. */
  readonly principal: Principal | null;
  /** Milliseconds since the epoch. */
  readonly expiresAt: number;
}

export const COOKIE = "onbehalf_console";
export const CSRF_HEADER = "x-csrf-token";
/** A session lasts at most this long (and never past the expiry of the token it was opened with). */
export const SESSION_TTL_MS = 8 * 3600_000;

/**
 * The console sessions of the instances that share `state`. Ids are stored as their SHA-256 only.
 *
 * @example
 * const { id, session } = await sessions.open({ role: "admin", tenant: null, who: "admin:1a2b3c4d", principal: null }, Date.now() + SESSION_TTL_MS);
 */
export class ConsoleSessions {
  constructor(
    private readonly state: Pick<
      StateStore,
      "putConsoleSession" | "getConsoleSession" | "deleteConsoleSession"
    >,
    private readonly now: () => number,
  ) {}

  async open(
    who: Omit<ConsoleSession, "csrf" | "expiresAt">,
    expiresAt: number,
  ): Promise<{ id: string; session: ConsoleSession }> {
    const id = randomBytes(32).toString("base64url");
    const session: ConsoleSession = { ...who, csrf: randomBytes(32).toString("base64url"), expiresAt };
    await this.state.putConsoleSession(
      hashOf(id),
      JSON.stringify(session),
      expiresAt - this.now(),
      ownerOf(who),
    );
    return { id, session };
  }

  /** The live session of this cookie value, or null. */
  async get(id: string | undefined): Promise<ConsoleSession | null> {
    if (id === undefined || id === "") return null;
    const stored = await this.state.getConsoleSession(hashOf(id));
    if (stored === null) return null;
    const session = JSON.parse(stored) as ConsoleSession;
    return session.expiresAt > this.now() ? session : null;
  }

  async close(id: string | undefined): Promise<void> {
    if (id !== undefined && id !== "") await this.state.deleteConsoleSession(hashOf(id));
  }
}

/** The session cookie's value in a request, if any. */
export function sessionIdOf(req: FastifyRequest): string | undefined {
  const header = req.headers.cookie;
  if (typeof header !== "string") return undefined;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq !== -1 && part.slice(0, eq).trim() === COOKIE) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** Set the session cookie (or clear it, with `id` null). Secure when the console is reached over HTTPS. */
export function setSessionCookie(
  reply: FastifyReply,
  id: string | null,
  maxAgeMs: number,
  secure: boolean,
): void {
  const value = id ?? "";
  const age = id === null ? 0 : Math.max(0, Math.floor(maxAgeMs / 1000));
  reply.header(
    "set-cookie",
    `${COOKIE}=${value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=${age}${secure ? "; Secure" : ""}`,
  );
}

/** Refuse a change whose `x-csrf-token` header is missing or is not this session's. */
export function checkCsrf(req: FastifyRequest, session: ConsoleSession): void {
  const given = req.headers[CSRF_HEADER];
  const a = Buffer.from(typeof given === "string" ? given : "");
  const b = Buffer.from(session.csrf);
  if (a.length !== b.length || !timingSafeEqual(a, b)) {
    throw new OnbehalfError(
      "ERR_CSRF",
      `a console change needs the session's CSRF token in the ${CSRF_HEADER} header (GET /ui/api/me gives it)`,
    );
  }
}

/**
 * Who holds a session, for the bound on sessions each holds: the human (issuer and subject: one user id at two
 * issuers is two humans), or the admin token's fingerprint.
 */
function ownerOf(who: Omit<ConsoleSession, "csrf" | "expiresAt">): string {
  return hashOf(
    JSON.stringify(who.principal === null ? [who.who] : [who.principal.issuer, who.principal.sub]),
  );
}

function hashOf(id: string): string {
  return createHash("sha256").update(id).digest("base64url");
}
