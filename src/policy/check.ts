/**
 * The policy's check of a loaded config (the loader runs it, see config/load.ts): the policy compiled, or why
 * it does not compile; and warnings for what compiles but is likely a mistake.
 */

import { closest, type Path, type PathIssue } from "../config/issues.js";
import type { ConfigCheck } from "../config/load.js";
import type { Config } from "../config/schema.js";
import { conditionCost } from "./cel.js";
import { type CompiledPolicy, compilePolicy } from "./compile.js";

/**
 * Compile the policy of a schema-valid config.
 *
 * @example
 * const { policy } = loadConfigFile("onbehalf.yaml"); // govern/config.ts runs this check
 */
export const checkPolicy: ConfigCheck<CompiledPolicy> = (config) => {
  const compiled = compilePolicy(config);
  return compiled.ok
    ? { value: compiled.policy, issues: [], warnings: referenceWarnings(config) }
    : { value: undefined, issues: compiled.issues, warnings: [] };
};

/** References to tools that are not declared: likely typos, but tools may also be declared in code. */
function referenceWarnings(config: Config): PathIssue[] {
  const declared = config.tools.map((t) => t.name);
  const known = new Set(declared);
  const out: PathIssue[] = [];
  const check = (name: string, path: Path) => {
    if (name === "*" || known.has(name)) return;
    const guess = closest(name, declared);
    out.push({
      path,
      message: `tool "${name}" is not declared under tools:`,
      fix:
        guess === undefined
          ? "declare it under tools:, or in code with gov.governed()"
          : `did you mean "${guess}"?`,
    });
  };
  config.tenants.forEach((tenant, t) => {
    const at = ["tenants", t, "policy"];
    for (const name of Object.keys(tenant.policy.tools)) check(name, [...at, "tools", name]);
    for (const [user, tools] of Object.entries(tenant.policy.user_tools)) {
      for (const name of Object.keys(tools)) check(name, [...at, "user_tools", user, name]);
    }
    tenant.policy.rules.forEach((rule, r) => {
      rule.tools?.forEach((name, k) => {
        check(name, [...at, "rules", r, "tools", k]);
      });
      const nested = conditionCost(rule.when)?.nested ?? [];
      if (nested.length > 0) {
        const path = [...at, "rules", r, "when"];
        out.push({
          path,
          message:
            `rule "${rule.id}" nests a comprehension over ${nested.join(", ")} inside another: its cost grows ` +
            `with the square of what the caller sends, and past limits.max_rule_reads ` +
            `(${config.limits.max_rule_reads}) reads it denies with rule_over_budget`,
          fix: "bound the inputs first (size(args.items) <= 50 && …), or compare within one pass",
        });
      }
    });
  });
  return out;
}
