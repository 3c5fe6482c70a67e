/**
 * Evaluating a run's capabilities (docs/capabilities.md): a call passes a layer when the layer grants its tool
 * and one of that tool's grants holds for its arguments; it must pass every layer. Conditions are CEL, compiled
 * once per distinct expression (a run's layers, a delegation token's on every request, share the compiled plan).
 * Fail closed: a condition that does not compile, errors or runs over its budget is no grant, and a call no grant
 * lets through for that reason is denied with `capability_error`.
 */
import { type CapabilityLayer, type CapabilitySetInput, capabilityLayer } from "../config/capabilities.js";
import type { ReasonCode } from "../decision.js";
import { OnbehalfError } from "../errors.js";
import {
  CAPABILITY_VARIABLES,
  type CelActivation,
  type CompileResult,
  compileCondition,
  DEFAULT_RULE_LIMITS,
} from "./cel.js";

/** Why the capabilities refuse a call. */
export interface CapabilityRefusal {
  readonly reason_code: Extract<ReasonCode, "capability_deny" | "capability_error">;
  readonly reason: string;
}

/** One step of the evaluation, for `policy explain`. */
export interface CapabilityStep {
  readonly step: string;
  readonly outcome: string;
  readonly detail?: unknown;
}

const compiled = new Map<string, CompileResult>();
const MAX_COMPILED = 4096;

/**
 * Compile a capability condition (cached by its text).
 *
 * @example
 * const c = capabilityCondition("args.recipient == task.payee");
 * if (!c.ok) console.error(c.error);
 */
export function capabilityCondition(expression: string): CompileResult {
  let c = compiled.get(expression);
  if (c === undefined) {
    if (compiled.size >= MAX_COMPILED) compiled.clear();
    c = compileCondition(expression, DEFAULT_RULE_LIMITS, CAPABILITY_VARIABLES);
    compiled.set(expression, c);
  }
  return c;
}

/**
 * The first condition of `layers` that does not compile, as an error message; null when all do. Where
 * capabilities come in (`gov.runAs`, `POST /v1/token`), a typo is refused there rather than denying every call.
 *
 * @example
 * capabilityErrors([layer]); // 'send_money: unknown variable "taks": conditions may use ...'
 */
export function capabilityErrors(layers: readonly CapabilityLayer[]): string | null {
  for (const layer of layers) {
    for (const grant of layer.tools) {
      if (grant.when === undefined) continue;
      const c = capabilityCondition(grant.when);
      if (!c.ok) return `${grant.tool}: ${c.error}`;
    }
  }
  return null;
}

/**
 * The layer of `agent` from an application's set, checked whole: its shape, and every condition compiled.
 * Throws `ERR_INVALID_ARGUMENT` naming what is wrong, so a typo fails where the run starts.
 *
 * @example
 * const layer = checkedLayer("refund-bot", { tools: [{ tool: "issue_refund", when: "args.amount <= 50" }] });
 */
export function checkedLayer(agent: string, input: CapabilitySetInput): CapabilityLayer {
  const layer = capabilityLayer(agent, input);
  const bad = "error" in layer ? layer.error : capabilityErrors([layer]);
  if (bad !== null) {
    throw new OnbehalfError("ERR_INVALID_ARGUMENT", `the capabilities of ${agent} are invalid: ${bad}`);
  }
  return layer as CapabilityLayer;
}

/**
 * Whether `layers` let a call to `tool` through: null when every layer does, else why not. `activation` makes
 * what conditions read (the call's arguments and variables), only once a condition needs it. `listing`: the tool
 * name alone (before there are arguments, as for MCP `tools/list`).
 *
 * @example
 * const refusal = capabilityRefusal(run.capabilities, "issue_refund", () => activation, Date.now(), bytes, false);
 */
export function capabilityRefusal(
  layers: readonly CapabilityLayer[],
  tool: string,
  activation: () => CelActivation,
  nowMs: number,
  argsBytes: number,
  listing: boolean,
  trace?: CapabilityStep[],
): CapabilityRefusal | null {
  let base: CelActivation | undefined;
  for (let i = 0; i < layers.length; i++) {
    const layer = layers[i]!;
    const where = `the capabilities of ${layer.agent}${layers.length > 1 ? ` (layer ${i + 1} of ${layers.length})` : ""}`;
    const grants = layer.tools.filter((g) => g.tool === tool);
    if (grants.length === 0) {
      trace?.push({ step: "capabilities", outcome: `${layer.agent}: tool not granted` });
      return { reason_code: "capability_deny", reason: `${tool} is not among ${where}` };
    }
    if (listing) continue;
    const errors: string[] = [];
    let held = false;
    let input: CelActivation | undefined;
    for (const grant of grants) {
      if (grant.when === undefined) {
        held = true;
        break;
      }
      base ??= activation();
      input ??= { ...base, task: layer.data };
      const c = capabilityCondition(grant.when);
      const result = c.ok ? c.condition(input, nowMs, argsBytes) : { error: c.error };
      if (result === true) {
        held = true;
        break;
      }
      if (result !== false) errors.push(`${grant.when}: ${result.error}`);
    }
    trace?.push({
      step: "capabilities",
      outcome: `${layer.agent}: ${held ? "granted" : errors.length === 0 ? "condition false" : "condition error"}`,
      detail: { conditions: grants.map((g) => g.when ?? "true") },
    });
    if (held) continue;
    if (errors.length > 0) {
      return {
        reason_code: "capability_error",
        reason: `${where} could not be evaluated for ${tool}: ${errors.join("; ")}`,
      };
    }
    const conditions = grants.map((g) => g.when).join(" | ");
    return {
      reason_code: "capability_deny",
      reason: `the arguments of ${tool} are outside ${where} (${conditions})`,
    };
  }
  return null;
}
