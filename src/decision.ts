/**
 * What a decision is, as data: its verdict, its reason code, what it charges and what it does to the output.
 * `policy/` makes decisions; the audit stores them and the limiter charges them; all three read these types
 * from here, so none of them depends on another for them.
 */
import type { PostTransform } from "./config/policy.js";

/** Every reason a decision can give: stable, part of the contract (docs/reason-codes.md). */
export const REASON_CODES = [
  "ok",
  "unauthenticated",
  "tenant_mismatch",
  "not_a_member",
  "missing_scope",
  "permission_deny",
  "rule_deny",
  "rule_over_budget",
  "capability_deny",
  "capability_error",
  "rate_limited",
  "approval_required",
  "approval_denied",
  "approval_expired",
  "fail_closed",
  "fail_open",
  "error",
] as const;
export type ReasonCode = (typeof REASON_CODES)[number];
export type Verdict = "allow" | "deny" | "ask";

/** A rate-limit bucket: the calls it counts and how many a minute it lets through. */
export interface Bucket {
  readonly key: string;
  readonly limit: number;
  /** Which layer set it, for explanations and audit reasons. */
  readonly source: string;
}

/** The policy's verdict that shadow mode reported but did not enforce. */
export interface ShadowVerdict {
  readonly decision: Verdict;
  readonly reason_code: ReasonCode;
  readonly reason: string;
  readonly rule: string | null;
}

/** A decision, as data. The audit stores it as it was. */
export interface Decision {
  readonly decision: Verdict;
  readonly reason_code: ReasonCode;
  readonly reason: string;
  /** The rule that decided, if a rule did. */
  readonly rule: string | null;
  /** The permission layer cell that decided, e.g. `tools.grant_permission.*`. */
  readonly layer: string | null;
  readonly tenant: string | null;
  readonly effective_scopes: readonly string[];
  readonly mode: "enforce" | "shadow";
  readonly fail_mode: "fail_closed" | "fail_open";
  readonly post_transform: PostTransform;
  /** Redaction paths added by rules, on top of the tool's own. */
  readonly redact: readonly string[];
  /** Rate-limit buckets to charge if the call goes ahead. */
  readonly buckets: readonly Bucket[];
  readonly shadow: ShadowVerdict | null;
  /**
   * With `fail_closed` from a store that could not answer: what the policy had decided (`allow`, or `ask`: the
   * call needed a human, and the answer to it is a denial, not an outage). A policy's `deny` is never replaced.
   */
  readonly policy_verdict?: "allow" | "ask";
}

/**
 * A deny that no policy made: an error on the way to a decision (arguments that cannot be encoded, a request
 * that cannot be decided again). Nothing charged, nothing to the output.
 *
 * @example
 * denial("error", "the arguments cannot be encoded as JSON");
 */
export function denial(reason_code: ReasonCode, reason: string): Decision {
  return {
    decision: "deny",
    reason_code,
    reason,
    rule: null,
    layer: null,
    tenant: null,
    effective_scopes: [],
    mode: "enforce",
    fail_mode: "fail_closed",
    post_transform: "audit",
    redact: [],
    buckets: [],
    shadow: null,
  };
}
