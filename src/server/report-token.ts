/**
 * Report tokens: how a caller that keeps no state on the control plane (`"report": "token"` at `/v1/check`, the
 * Python client's `check()`) may still report a call's result. The call that would have waited in the state
 * store is signed into a short JWT with the server's signing key and handed to the caller; a report that brings
 * it back is accepted once (a claim kept until the token's own expiry), by any instance of the deployment.
 */
import { createPublicKey } from "node:crypto";
import { OnbehalfError } from "../errors.js";
import { createJwtVerifier, type JwtSignatureVerifier } from "../identity/jws.js";
import { type SigningKey, signJwt } from "../identity/keys.js";
import type { OpenCall } from "./state.js";

const TYP = "onbehalf-report+jwt";

export interface ReportTokens {
  /** Sign `call` for a report within `ttlMs`. */
  issue(call: OpenCall, ttlMs: number): string;
  /**
   * The call a report token stands for, when it is this deployment's, still valid and for call `callId`;
   * throws `ERR_NOT_FOUND` (expired) or `ERR_INVALID_ARGUMENT` (anything else) otherwise.
   */
  open(token: string, callId: string): { readonly call: OpenCall; readonly expiresAt: number };
}

/**
 * Report tokens signed with the control plane's key.
 *
 * @example
 * const tokens = reportTokens(key, issuer);
 * const jwt = tokens.issue(call, 300_000);
 */
export function reportTokens(key: SigningKey, issuer: string, now: () => number = Date.now): ReportTokens {
  let verify: JwtSignatureVerifier | undefined;
  const audience = `${issuer}#report`;
  return {
    issue(call, ttlMs) {
      return signJwt(
        key,
        { iss: issuer, aud: audience, exp: Math.floor((now() + ttlMs) / 1000), call },
        { typ: TYP },
      );
    },
    open(token, callId) {
      verify ??= createJwtVerifier(
        createPublicKey(key.privateKey).export({ type: "spki", format: "pem" }).toString(),
        [key.alg],
      );
      let payload: Record<string, unknown>;
      try {
        payload = verify(token);
      } catch (e) {
        throw new OnbehalfError(
          "ERR_INVALID_ARGUMENT",
          `the report token does not verify: ${(e as Error).message}`,
        );
      }
      const call = payload["call"] as OpenCall | undefined;
      if (payload["iss"] !== issuer || payload["aud"] !== audience || call?.callId !== callId) {
        throw new OnbehalfError("ERR_INVALID_ARGUMENT", `the report token is not call ${callId}'s`);
      }
      const expiresAt = Number(payload["exp"]) * 1000;
      if (!(expiresAt > now())) {
        throw new OnbehalfError(
          "ERR_NOT_FOUND",
          `call ${callId} no longer takes a result: its report token expired (server.pending_call_seconds)`,
        );
      }
      return { call, expiresAt };
    },
  };
}
