/**
 * Report tokens: how a caller that keeps no state on the control plane (`"report": "token"` at `/v1/check`, the
 * Python client's `check()`) may still report a call's result. The call that would have waited in the state
 * store is sealed into a short token handed to the caller; a report that brings it back is accepted once (a
 * claim kept until the token's own expiry), by any instance of the deployment.
 *
 * The token is opaque and only this deployment reads it, so it is MAC'd (HMAC-SHA256), not signed: with a key
 * derived (HKDF) from the server's signing key, which every instance of a deployment shares. An EdDSA JWT cost 80
 * µs to issue and 150 µs to open on every check and report; this costs what its JSON does. It is never a JWT,
 * so no verifier of bearer tokens takes it for one.
 */
import { createHmac, hkdfSync, timingSafeEqual } from "node:crypto";
import { OnbehalfError } from "../errors.js";
import type { SigningKey } from "../identity/keys.js";
import type { OpenCall } from "./state.js";

const VERSION = "ort1";

export interface ReportTokens {
  /** Seal `call` for a report within `ttlMs`. */
  issue(call: OpenCall, ttlMs: number): string;
  /**
   * The call a report token stands for, when it is this deployment's, still valid and for call `callId`;
   * throws `ERR_NOT_FOUND` (expired) or `ERR_INVALID_ARGUMENT` (anything else) otherwise.
   */
  open(token: string, callId: string): { readonly call: OpenCall; readonly expiresAt: number };
}

/**
 * Report tokens MAC'd with a key derived from the control plane's signing key.
 *
 * @example
 * const tokens = reportTokens(key, issuer);
 * const token = tokens.issue(call, 300_000);
 */
export function reportTokens(key: SigningKey, issuer: string, now: () => number = Date.now): ReportTokens {
  const macKey = Buffer.from(
    hkdfSync(
      "sha256",
      key.privateKey.export({ format: "der", type: "pkcs8" }),
      issuer,
      "onbehalf report token v1",
      32,
    ),
  );
  const mac = (payload: string) => createHmac("sha256", macKey).update(payload).digest();
  const audience = `${issuer}#report`;
  const invalid = (why: string) =>
    new OnbehalfError("ERR_INVALID_ARGUMENT", `the report token does not verify: ${why}`);
  return {
    issue(call, ttlMs) {
      const payload = `${VERSION}.${Buffer.from(
        JSON.stringify({ iss: issuer, aud: audience, exp: Math.floor((now() + ttlMs) / 1000), call }),
      ).toString("base64url")}`;
      return `${payload}.${mac(payload).toString("base64url")}`;
    },
    open(token, callId) {
      const cut = token.lastIndexOf(".");
      const payload = token.slice(0, Math.max(0, cut));
      if (cut < 0 || !payload.startsWith(`${VERSION}.`)) throw invalid("it is not a report token");
      const given = Buffer.from(token.slice(cut + 1), "base64url");
      const expected = mac(payload);
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
        throw invalid("its MAC is not this deployment's");
      }
      const claims = JSON.parse(Buffer.from(payload.slice(VERSION.length + 1), "base64url").toString()) as {
        iss?: unknown;
        aud?: unknown;
        exp?: unknown;
        call?: OpenCall;
      };
      if (claims.iss !== issuer || claims.aud !== audience || claims.call?.callId !== callId) {
        throw new OnbehalfError("ERR_INVALID_ARGUMENT", `the report token is not call ${callId}'s`);
      }
      const expiresAt = Number(claims.exp) * 1000;
      if (!(expiresAt > now())) {
        throw new OnbehalfError(
          "ERR_NOT_FOUND",
          `call ${callId} no longer takes a result: its report token expired (server.pending_call_seconds)`,
        );
      }
      return { call: claims.call, expiresAt };
    },
  };
}
