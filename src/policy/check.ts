/**
 * The policy's check of a loaded config (the loader runs it, see config/load.ts): the policy compiled, or why
 * it does not compile (a tool name no `tools` entry declares included); and warnings for what compiles but is
 * likely a mistake.
 */

import { closest, type Path, type PathIssue } from "../config/issues.js";
import type { ConfigCheck } from "../config/load.js";
import { promptPolicyName, resourcePolicyName } from "../config/resources.js";
import type { Config } from "../config/schema.js";
import { exposedPrefix } from "../config/server.js";
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
  if (!compiled.ok) return { value: undefined, issues: compiled.issues, warnings: [] };
  const { undeclared, warnings } = references(config);
  // A misspelt tool name would make its entry or rule apply to nothing: the deny it meant silently does not
  // hold. So it is an error, unless the config says its tools are declared in code.
  return config.allow_undeclared_tools
    ? { value: compiled.policy, issues: [], warnings: [...undeclared, ...warnings] }
    : { value: undeclared.length > 0 ? undefined : compiled.policy, issues: undeclared, warnings };
};

/**
 * Tool names the policy uses that no `tools` entry declares (`undeclared`), and rules whose cost grows with the
 * square of the input (`warnings`).
 */
function references(config: Config): { undeclared: PathIssue[]; warnings: PathIssue[] } {
  const declared = [
    ...config.tools.map((t) => t.name),
    ...config.resources.map((r) => resourcePolicyName(r.uri)),
    ...config.prompts.map((p) => promptPolicyName(p.name)),
  ];
  const known = new Set(declared);
  // An upstream with `expose: all` declares its tools itself, under its prefix (see config/server.ts); one
  // without a prefix could have any name, so its tools are declared here like any other.
  const exposedAll = config.upstreams
    .filter((u) => u.expose === "all")
    .map(exposedPrefix)
    .filter((prefix) => prefix !== "")
    .flatMap((prefix) => [prefix, promptPolicyName(prefix)]);
  // Its undeclared resources are decided as `resource:<upstream>` (config/resources.ts).
  for (const u of config.upstreams) if (u.expose === "all") known.add(resourcePolicyName(u.name));
  const undeclared: PathIssue[] = [];
  const out: PathIssue[] = [];
  const check = (name: string, path: Path) => {
    if (name === "*" || known.has(name) || exposedAll.some((p) => name.startsWith(p))) return;
    const guess = closest(name, declared);
    undeclared.push({
      path,
      message: `tool "${name}" is not declared under ${section(name)}:, so this entry would apply to no call`,
      fix:
        guess === undefined
          ? "declare it under tools: (a name alone will do), or set allow_undeclared_tools: true if your tools are declared in code"
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
  return { undeclared, warnings: out };
}

/** Where a policy name is declared: `resources:` for `resource:…`, `prompts:` for `prompt:…`, else `tools:`. */
function section(name: string): string {
  return name.startsWith("resource:") ? "resources" : name.startsWith("prompt:") ? "prompts" : "tools";
}
