/**
 * Claim checks (RFC 7519 §4.1, RFC 8725 §3.8–3.10) and the mapping of a verified claim set onto a
 * `Principal`. Runs only after the signature has been verified.
 */

import { OnbehalfError } from "../errors.js";
import { hasUnsafeText, unsafeTextMessage } from "../text.js";
import type { ClaimMapping } from "./presets.js";
import type { Principal } from "./principal.js";

/** What an issuer's claims must satisfy, and how they map onto a principal. */
export interface ClaimRules {
  /** `iss` must equal this exactly. */
  readonly issuer: string;
  /** The token's audience claim must contain at least one of these. */
  readonly audiences: ReadonlySet<string>;
  readonly mapping: ClaimMapping;
  readonly toleranceMs: number;
  /** Prepended to the subject to make `Principal.user`. */
  readonly userPrefix: string;
  /**
   * A claim naming the issuer that verified the human first (`Principal.origin`). Only for issuers whose tokens
   * onbehalf signs itself (delegation tokens); an identity provider's token never sets it.
   */
  readonly originClaim?: string;
}

type Claims = Readonly<Record<string, unknown>>;

/**
 * Read a claim by path: an exact top-level key first (`cognito:groups`, `https://example.com/roles`), then
 * dotted traversal through nested objects (`realm_access.roles`), where each step again prefers the longest
 * key that exists. Only own properties of plain objects are read.
 *
 * @example
 * readClaim({ realm_access: { roles: ["admin"] } }, "realm_access.roles"); // ["admin"]
 */
export function readClaim(claims: Claims, path: string): unknown {
  if (Object.hasOwn(claims, path)) return claims[path];
  for (let dot = path.lastIndexOf("."); dot > 0; dot = path.lastIndexOf(".", dot - 1)) {
    const head = path.slice(0, dot);
    if (!Object.hasOwn(claims, head)) continue;
    const inner = claims[head];
    if (inner === null || typeof inner !== "object" || Array.isArray(inner)) continue;
    const value = readClaim(inner as Claims, path.slice(dot + 1));
    if (value !== undefined) return value;
  }
  return undefined;
}

/**
 * Check `iss`, `exp` (required), `nbf`, `iat`, the audience and the subject against the rules at `nowMs`.
 *
 * @example
 * checkClaims(payload, rules, Date.now()); // throws OnbehalfError ERR_TOKEN_EXPIRED, …
 */
export function checkClaims(claims: Claims, rules: ClaimRules, nowMs: number): void {
  const iss = claims["iss"];
  if (iss !== rules.issuer) {
    throw new OnbehalfError(
      "ERR_TOKEN_ISSUER_UNKNOWN",
      `the token iss ${JSON.stringify(iss)} is not the issuer "${rules.issuer}" it was verified for`,
    );
  }
  const exp = claims["exp"];
  if (typeof exp !== "number" || !Number.isFinite(exp)) {
    throw new OnbehalfError(
      "ERR_TOKEN_CLAIM_INVALID",
      "the token has no numeric exp claim; tokens must expire",
    );
  }
  if (nowMs >= exp * 1000 + rules.toleranceMs) {
    throw new OnbehalfError("ERR_TOKEN_EXPIRED", `the token expired at ${isoTime(exp)}`);
  }
  const nbf = numericDate(claims, "nbf");
  if (nbf !== undefined && nowMs + rules.toleranceMs < nbf * 1000) {
    throw new OnbehalfError("ERR_TOKEN_NOT_YET_VALID", `the token is not valid before ${isoTime(nbf)}`);
  }
  const iat = numericDate(claims, "iat");
  if (iat !== undefined && iat * 1000 > nowMs + rules.toleranceMs) {
    throw new OnbehalfError(
      "ERR_TOKEN_ISSUED_IN_FUTURE",
      `the token says it was issued at ${isoTime(iat)}, in the future (check the clocks)`,
    );
  }
  checkAudience(claims, rules);
  for (const [name, want] of Object.entries(rules.mapping.required ?? {})) {
    if (claims[name] !== want) {
      throw new OnbehalfError(
        "ERR_TOKEN_TYPE_INVALID",
        `the token's ${name} is ${JSON.stringify(claims[name])}, not "${want}": only access tokens are accepted`,
      );
    }
  }
  const sub = readClaim(claims, rules.mapping.subject);
  if (typeof sub !== "string" || sub === "") {
    throw new OnbehalfError(
      "ERR_TOKEN_CLAIM_INVALID",
      `the token's subject claim "${rules.mapping.subject}" is missing or not a non-empty string`,
    );
  }
}

function checkAudience(claims: Claims, rules: ClaimRules): void {
  for (const path of rules.mapping.audience) {
    const value = readClaim(claims, path);
    if (value === undefined) continue;
    const values = Array.isArray(value) ? value : [value];
    for (const v of values) {
      if (typeof v === "string" && rules.audiences.has(v)) return;
    }
    throw new OnbehalfError(
      "ERR_TOKEN_AUDIENCE_INVALID",
      `the token ${path} ${JSON.stringify(value)} does not contain an accepted audience (${[...rules.audiences].join(", ")})`,
    );
  }
  throw new OnbehalfError(
    "ERR_TOKEN_AUDIENCE_INVALID",
    `the token has no audience (${rules.mapping.audience.join(" or ")}); it must be issued for this service`,
  );
}

function numericDate(claims: Claims, name: string): number | undefined {
  const v = claims[name];
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new OnbehalfError("ERR_TOKEN_CLAIM_INVALID", `the token ${name} claim is not a number`);
  }
  return v;
}

function isoTime(seconds: number): string {
  const d = new Date(seconds * 1000);
  return Number.isNaN(d.getTime()) ? String(seconds) : d.toISOString();
}

/**
 * Build the principal from checked claims (call {@link checkClaims} first). The principal, its lists and the
 * top level of its claims are frozen: the same object is served from the token cache to every caller.
 *
 * @example
 * const principal = toPrincipal(payload, rules);
 */
export function toPrincipal(claims: Record<string, unknown>, rules: ClaimRules): Principal {
  const { mapping } = rules;
  const shape = claimShapeProblem(claims);
  if (shape !== undefined) throw new OnbehalfError("ERR_TOKEN_CLAIM_INVALID", `the token ${shape}`);
  const sub = readClaim(claims, mapping.subject) as string;
  const tenant = tenantOf(claims, mapping);
  const email = firstString(claims, mapping.email);
  // Who the human is lands in audit columns and headers: a control character there is refused, not stored.
  for (const [name, value] of [
    ["subject", sub],
    ["tenant", tenant],
    ["email", email],
  ] as const) {
    if (value !== null && hasUnsafeText(value)) {
      throw new OnbehalfError("ERR_TOKEN_CLAIM_INVALID", `the token's ${unsafeTextMessage(`${name} claim`)}`);
    }
  }
  const origin = rules.originClaim === undefined ? undefined : claims[rules.originClaim];
  // Only a carrier's tokens (onbehalf's own delegation tokens, signed by this server) say who the human was.
  const carried = rules.originClaim === undefined ? undefined : carriedHuman(claims);
  const principal: Principal = {
    user: rules.userPrefix + sub,
    sub,
    issuer: rules.issuer,
    ...(typeof origin === "string" ? { origin } : {}),
    ...carried,
    tenant,
    email,
    scopes: Object.freeze(collect(claims, mapping.scopes, true)),
    roles: Object.freeze(collect(claims, mapping.roles, false)),
    exp: claims["exp"] as number,
    claims: Object.freeze(claims),
  };
  return Object.freeze(principal);
}

/** The human a delegation token carries (`obo_sub`, `obo_claims`); nothing from tokens minted before them. */
function carriedHuman(claims: Claims): Pick<Principal, "originSub" | "originClaims"> {
  const sub = claims["obo_sub"];
  const human = claims["obo_claims"];
  if (sub === undefined && human === undefined) return {};
  if (typeof sub !== "string" || human === null || typeof human !== "object" || Array.isArray(human)) {
    throw new OnbehalfError(
      "ERR_TOKEN_CLAIM_INVALID",
      "the delegation token's obo_sub or obo_claims is malformed",
    );
  }
  return { originSub: sub, originClaims: Object.freeze({ ...(human as Record<string, unknown>) }) };
}

function tenantOf(claims: Claims, mapping: ClaimMapping): string | null {
  const tenant = mapping.tenant;
  if (tenant === null) return null;
  if (typeof tenant !== "string") return tenant.value;
  const value = readClaim(claims, tenant);
  if (value === undefined || value === null || value === "") return null;
  if (typeof value === "string") return value;
  if (typeof value === "number" && Number.isFinite(value)) return String(value);
  throw new OnbehalfError("ERR_TOKEN_CLAIM_INVALID", `the token's tenant claim "${tenant}" is not a string`);
}

function firstString(claims: Claims, paths: readonly string[]): string | null {
  for (const path of paths) {
    const v = readClaim(claims, path);
    if (typeof v === "string" && v !== "") return v;
  }
  return null;
}

/** Union of string values in claim order, de-duplicated; `split` splits strings on spaces (RFC 6749 §3.3). */
function collect(claims: Claims, paths: readonly string[], split: boolean): string[] {
  const out: string[] = [];
  for (const path of paths) {
    const v = readClaim(claims, path);
    if (typeof v === "string") {
      if (!split) addUnique(out, v);
      else if (v.includes(" ")) for (const s of v.split(" ")) addUnique(out, s);
      else addUnique(out, v);
    } else if (Array.isArray(v)) {
      for (const item of v) if (typeof item === "string") addUnique(out, item);
    }
  }
  return out.length > DEDUPE_SCAN_MAX ? [...new Set(out)] : out;
}

/** Lists longer than this are de-duplicated with a Set at the end; shorter ones by scanning as they grow. */
const DEDUPE_SCAN_MAX = 32;

function addUnique(out: string[], s: string): void {
  if (s === "") return;
  if (out.length > DEDUPE_SCAN_MAX || !out.includes(s)) out.push(s);
}

const MAX_CLAIM_DEPTH = 32;

/**
 * Claims reach CEL rules as `user.claims`. CEL reads an object with the key `$typeName` as a protobuf message,
 * so a rule would see another type than the claim is; no identity provider needs the key, nor nesting deeper
 * than {@link MAX_CLAIM_DEPTH}.
 */
function claimShapeProblem(value: unknown, depth = 0): string | undefined {
  if (value === null || typeof value !== "object") return undefined;
  if (depth > MAX_CLAIM_DEPTH) return `has claims nested deeper than ${MAX_CLAIM_DEPTH} levels`;
  if (!Array.isArray(value) && Object.hasOwn(value, "$typeName")) {
    return 'has a claim object with the reserved key "$typeName"';
  }
  for (const v of Object.values(value)) {
    const problem = claimShapeProblem(v, depth + 1);
    if (problem !== undefined) return problem;
  }
  return undefined;
}
