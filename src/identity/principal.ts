/**
 * The verified human behind a call. Built only by the identity verifier from a token whose signature,
 * issuer, audience and lifetime were checked; everything downstream trusts it and nothing else.
 */
export interface Principal {
  /**
   * The id that policy keys, rate limits and the audit use: the subject claim, prefixed with the issuer's
   * `user_prefix` (by default `<issuer>#` when several configured issuers are trusted, nothing when one is;
   * the development issuer and onbehalf's own delegation tokens never add one).
   */
  readonly user: string;
  /** The raw subject claim (`sub`, or the preset's subject claim such as Entra's `oid`). */
  readonly sub: string;
  /** The `iss` of the token. */
  readonly issuer: string;
  /**
   * For onbehalf's own delegation tokens: the issuer that verified the human in the first place (the token
   * carries it, signed). Tenants are bound to the issuers that may vouch for them by this issuer.
   */
  readonly origin?: string;
  /** The tenant from the mapped claim or the issuer's literal; null when the token names none. */
  readonly tenant: string | null;
  readonly email: string | null;
  /** Scopes granted by the token, de-duplicated, in token order. */
  readonly scopes: readonly string[];
  readonly roles: readonly string[];
  /** Expiry, seconds since the epoch. */
  readonly exp: number;
  /** Every verified claim, for CEL conditions (`user.claims`). */
  readonly claims: Readonly<Record<string, unknown>>;
  /**
   * For onbehalf's own delegation tokens: the human as the first issuer verified them — their raw subject and
   * every claim that issuer signed, carried signed from hop to hop (`obo_sub`, `obo_claims`). Policy reads the
   * human through these (`user.sub`, `user.issuer`, `user.claims`), so a rule on the human's claims holds for
   * every agent acting for them, as it does for the human.
   */
  readonly originSub?: string;
  readonly originClaims?: Readonly<Record<string, unknown>>;
}
