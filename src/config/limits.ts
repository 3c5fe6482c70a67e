/** Limits: the rate-limit store, and the bounds on what one call may cost. */
import { z } from "zod";
import { nonEmpty } from "./fields.js";

export const LimitsConfig = z.strictObject({
  store: nonEmpty.default("memory"),
  /**
   * Prefix of every key onbehalf keeps in Redis (rate limits, approvals, open calls, the live config): give each
   * deployment sharing a Redis its own.
   */
  redis_prefix: nonEmpty.regex(/^[A-Za-z0-9_.:-]+$/, "letters, digits and _ . : - only").default("onbehalf:"),
  /** Serialized arguments larger than this are denied before policy runs. */
  max_args_bytes: z.number().int().positive().default(65_536),
  /**
   * What one evaluation of a rule with a comprehension (`exists`, `all`, `map`, `filter`, `exists_one`) may
   * read of `args`, `user` and `chain`: each field or element read counts one. Past it the rule denies
   * (`rule_over_budget`), whatever its effect. Bounds the time one call can hold the event loop.
   */
  max_rule_reads: z.number().int().positive().default(10_000),
  /** A rule that reads `args` denies (`rule_over_budget`) when the serialized arguments are larger. */
  max_rule_args_bytes: z.number().int().positive().default(32_768),
});
export type LimitsConfig = z.output<typeof LimitsConfig>;
