/**
 * Claim-mapping presets: where each identity provider puts the subject, tenant, scopes, email and roles.
 * An issuer's `claims` config overrides a preset field by field; a field set in the config replaces the
 * preset's value for that field entirely.
 *
 * Paths are dotted (`realm_access.roles`); a key that itself contains dots or colons, such as
 * `https://example.com/roles` or `cognito:groups`, is matched whole first (see `readClaim`).
 */
import type { ClaimsMapping, Preset } from "../config/issuer.js";

/** A preset or resolved mapping: lists are tried in order (email: first present; scopes, roles: union). */
export interface ClaimMapping {
  /** Subject claim: the user id policy, limits and audit key on. */
  readonly subject: string;
  /** A claim path, or a literal tenant for every token of the issuer; null = no tenant. */
  readonly tenant: string | { readonly value: string } | null;
  /** Claims whose values (space-separated string or array of strings) make up the scopes, united. */
  readonly scopes: readonly string[];
  /** Claims tried in order; the first non-empty string is the email. */
  readonly email: readonly string[];
  /** Claims whose values (a string or an array of strings) make up the roles, united. */
  readonly roles: readonly string[];
  /** Claims checked against the configured audience, in order; the first present one decides. */
  readonly audience: readonly string[];
  /** Claims that must have exactly these values (Cognito: `token_use` must be `access`). */
  readonly required?: Readonly<Record<string, string>>;
}

/**
 * The presets.
 *
 * - **auth0**: subject `sub` (e.g. `auth0|64f…`), tenant `org_id` (Auth0 Organizations), scopes from `scope`
 *   and `permissions` (RBAC "Add Permissions in the Access Token"), email `email`, roles `roles`. Auth0 puts
 *   custom claims under a namespace: map them, e.g. `roles: https://example.com/roles`.
 * - **okta**: subject `sub` (for Okta access tokens this is the login, often an email; use `subject: uid`
 *   for the immutable user id), scopes `scp` (an array), roles `groups`, email `email`, no tenant.
 * - **entra** (Microsoft Entra ID): subject `oid` (the object id is stable across applications; `sub` is
 *   pairwise per app), tenant `tid`, scopes from `scp` (delegated, space-separated) and `roles` (app roles),
 *   email the first of `email`, `preferred_username`, `upn`, roles `roles`.
 * - **cognito** (Amazon Cognito): subject `sub`, tenant `custom:tenant`, scopes from `scope` and
 *   `cognito:groups`, roles `cognito:groups`, email `email` then `username`. Cognito access tokens carry no
 *   `aud`: the configured audience (the app client id) is checked against `client_id`. `token_use` must be
 *   `access`: a Cognito ID token (which does carry `aud`) is not an access token and is refused.
 * - **keycloak**: subject `sub`, tenant `tenant` (add a mapper), scopes from `scope` and
 *   `realm_access.roles`, roles `realm_access.roles`, email `email`.
 * - **google**: subject `sub`, tenant `hd` (the Workspace domain), email `email`, scopes `scope`.
 * - **generic** (the default): subject `sub`, tenant `tenant`, scopes from `scope` and `scp`, roles `roles`,
 *   email `email`.
 *
 * @example
 * CLAIM_PRESETS.entra.subject; // "oid"
 */
export const CLAIM_PRESETS: Readonly<Record<Preset, ClaimMapping>> = {
  auth0: {
    subject: "sub",
    tenant: "org_id",
    scopes: ["scope", "permissions"],
    email: ["email"],
    roles: ["roles"],
    audience: ["aud"],
  },
  okta: {
    subject: "sub",
    tenant: null,
    scopes: ["scp"],
    email: ["email"],
    roles: ["groups"],
    audience: ["aud"],
  },
  entra: {
    subject: "oid",
    tenant: "tid",
    scopes: ["scp", "roles"],
    email: ["email", "preferred_username", "upn"],
    roles: ["roles"],
    audience: ["aud"],
  },
  cognito: {
    subject: "sub",
    tenant: "custom:tenant",
    scopes: ["scope", "cognito:groups"],
    email: ["email", "username"],
    roles: ["cognito:groups"],
    audience: ["client_id", "aud"],
    required: { token_use: "access" },
  },
  keycloak: {
    subject: "sub",
    tenant: "tenant",
    scopes: ["scope", "realm_access.roles"],
    email: ["email"],
    roles: ["realm_access.roles"],
    audience: ["aud"],
  },
  google: { subject: "sub", tenant: "hd", scopes: ["scope"], email: ["email"], roles: [], audience: ["aud"] },
  generic: {
    subject: "sub",
    tenant: "tenant",
    scopes: ["scope", "scp"],
    email: ["email"],
    roles: ["roles"],
    audience: ["aud"],
  },
};

/**
 * The mapping for an issuer: its preset, with each field the config sets replacing the preset's.
 *
 * @example
 * resolveClaimMapping("auth0", { roles: "https://example.com/roles" }).roles; // ["https://example.com/roles"]
 */
export function resolveClaimMapping(preset: Preset, claims: ClaimsMapping): ClaimMapping {
  const base = CLAIM_PRESETS[preset];
  const list = (v: string | readonly string[]): readonly string[] => (typeof v === "string" ? [v] : v);
  return {
    subject: claims.subject ?? base.subject,
    tenant: claims.tenant ?? base.tenant,
    scopes: claims.scopes === undefined ? base.scopes : list(claims.scopes),
    email: claims.email === undefined ? base.email : [claims.email],
    roles: claims.roles === undefined ? base.roles : list(claims.roles),
    audience: base.audience,
    ...(base.required === undefined ? {} : { required: base.required }),
  };
}
