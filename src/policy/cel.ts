/**
 * CEL conditions for policy rules, via @bufbuild/cel (conformance-tested). Each expression is parsed and
 * planned once, when the policy loads; a call only evaluates the plan (a few µs), never re-parses.
 */
import { celEnv, isCelError, parse, plan } from "@bufbuild/cel";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";

/** The variables a condition may use. */
export const CEL_VARIABLES = ["user", "agent", "tier", "chain", "tool", "args", "now", "tenant"] as const;

/** What a condition is evaluated against. `now` is filled in lazily. */
export interface CelActivation {
  user: {
    id: string;
    sub: string;
    issuer: string;
    email: string | null;
    tenant: string | null;
    scopes: readonly string[];
    roles: readonly string[];
    claims: Readonly<Record<string, unknown>>;
  };
  agent: string;
  tier: string;
  chain: readonly string[];
  tool: string;
  args: unknown;
  tenant: string;
}

/** A compiled condition: returns true/false, or an error message when evaluation fails. */
export type Condition = (activation: CelActivation, nowMs: number) => boolean | { error: string };

export type CompileResult = { ok: true; condition: Condition } | { ok: false; error: string };

const env = celEnv();
const ALWAYS: Condition = () => true;

/**
 * Parse and plan a CEL expression once. Unknown variables and syntax errors are reported here, at load,
 * so a typo in a rule is a config error rather than a deny on every call.
 *
 * @example
 * const c = compileCondition("args.amount > 500");
 * if (c.ok) c.condition(activation, Date.now()); // true | false | { error }
 */
export function compileCondition(expression: string): CompileResult {
  if (expression.trim() === "true") return { ok: true, condition: ALWAYS };
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(expression);
  } catch (e) {
    return { ok: false, error: `CEL syntax error: ${messageOf(e).replace(/^<input>:/, "at ")}` };
  }
  const unknown = unknownIdentifiers(parsed.expr);
  if (unknown.length > 0) {
    return {
      ok: false,
      error: `unknown variable ${unknown.map((u) => `"${u}"`).join(", ")}: conditions may use ${CEL_VARIABLES.join(", ")}`,
    };
  }
  let evaluate: ReturnType<typeof plan>;
  try {
    evaluate = plan(env, parsed);
  } catch (e) {
    return { ok: false, error: `CEL error: ${messageOf(e)}` };
  }
  const usesNow = expression.includes("now");
  const condition: Condition = (activation, nowMs) => {
    let result: unknown;
    try {
      const input = usesNow ? { ...activation, now: timestampFromMs(nowMs) } : activation;
      result = evaluate(input as never);
    } catch (e) {
      return { error: messageOf(e) };
    }
    if (isCelError(result)) return { error: result.message };
    if (typeof result !== "boolean") return { error: `the condition returned ${typeof result}, not a bool` };
    return result;
  };
  return { ok: true, condition };
}

/** Identifiers the expression reads that are neither condition variables nor comprehension variables. */
function unknownIdentifiers(root: unknown): string[] {
  const idents = new Set<string>();
  const bound = new Set<string>();
  const stack: unknown[] = [root];
  while (stack.length > 0) {
    const node = stack.pop();
    if (node === null || typeof node !== "object") continue;
    if (Array.isArray(node)) {
      stack.push(...node);
      continue;
    }
    const record = node as Record<string, unknown>;
    const kind = record["exprKind"] as { case?: string; value?: Record<string, unknown> } | undefined;
    if (kind?.case === "identExpr") idents.add(String(kind.value?.["name"]));
    if (kind?.case === "comprehensionExpr" && kind.value) {
      for (const v of ["iterVar", "iterVar2", "accuVar"]) {
        const name = kind.value[v];
        if (typeof name === "string" && name !== "") bound.add(name);
      }
    }
    for (const value of Object.values(record)) if (typeof value === "object") stack.push(value);
  }
  const known = new Set<string>(CEL_VARIABLES);
  return [...idents].filter((i) => !known.has(i) && !bound.has(i));
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
