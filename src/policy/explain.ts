/**
 * `explain()`: decide a call and say how — which checks passed, which layer cells matched and which one
 * decided, which rules were evaluated, which rate-limit buckets apply. It runs the same `decide()` as the
 * hot path, with a trace; there is no second implementation to drift.
 */

import type { Decision } from "../decision.js";
import type { CompiledPolicy } from "./compile.js";
import { type DecisionInput, decide, type TraceStep } from "./decide.js";

export interface Explanation {
  readonly decision: Decision;
  readonly steps: readonly TraceStep[];
}

/**
 * Decide `input` and return the decision with its steps.
 *
 * @example
 * const { decision, steps } = explain(policy, input);
 * console.log(formatExplanation(input, { decision, steps }));
 */
export function explain(policy: CompiledPolicy, input: DecisionInput): Explanation {
  const steps: TraceStep[] = [];
  const decision = decide(policy, input, steps);
  return { decision, steps };
}

/** Render an explanation for a terminal. */
export function formatExplanation(input: DecisionInput, { decision, steps }: Explanation): string {
  const tiers = input.tiers ?? [];
  const chain = tiers.some((t) => t !== input.tier)
    ? input.chain.map((agent, i) => `${agent} (${tiers[i] ?? input.tier})`).join(" → ")
    : input.chain.join(" → ");
  const lines = [
    `call: ${input.principal.user} (tenant ${input.principal.tenant ?? "none"}) → ${input.tool}, tier ${input.tier}, chain ${chain}`,
  ];
  for (const layer of input.capabilities ?? []) {
    const grants = layer.tools.map((g) => (g.when === undefined ? g.tool : `${g.tool} if ${g.when}`));
    const data = Object.keys(layer.data).length === 0 ? "" : `, task ${JSON.stringify(layer.data)}`;
    lines.push(`  capabilities of ${layer.agent}: ${grants.join("; ") || "none"}${data}`);
  }
  for (const step of steps) {
    if (step.step === "result") continue;
    lines.push(`  ${step.step.padEnd(12)} ${step.outcome}${detailOf(step)}`);
  }
  for (const b of decision.buckets)
    lines.push(`  ${"rate limit".padEnd(12)} ${b.limit}/min from ${b.source}`);
  if (decision.post_transform !== "audit") {
    lines.push(
      `  ${"output".padEnd(12)} ${decision.post_transform}${decision.redact.length > 0 ? ` (+ ${decision.redact.join(", ")})` : ""}`,
    );
  }
  const by =
    decision.rule !== null
      ? ` by rule ${decision.rule}`
      : decision.layer !== null
        ? ` by ${decision.layer}`
        : "";
  lines.push(`result: ${decision.decision} (${decision.reason_code})${by}: ${decision.reason}`);
  if (decision.shadow !== null) {
    lines.push(
      `shadow: would ${decision.shadow.decision} (${decision.shadow.reason_code}): ${decision.shadow.reason}`,
    );
  }
  return lines.join("\n");
}

function detailOf(step: TraceStep): string {
  const d = step.detail as Record<string, unknown> | undefined;
  if (d === undefined) return "";
  if (step.step === "permission") {
    const matched = (d["matched"] as string[]).join(", ") || "none";
    return ` (decided by ${String(d["decided_by"])}; matched: ${matched})`;
  }
  if (step.step === "verdict") return `: ${String(d["reason"])}`;
  if (step.step === "capabilities") return ` (${(d["conditions"] as string[]).join(" | ")})`;
  if (step.step === "scopes") return ` (effective: ${(d["effective"] as string[]).join(" ") || "none"})`;
  if (step.step === "tool")
    return ` (requires: ${(d["required_scopes"] as string[]).join(" ") || "nothing"})`;
  return "";
}
