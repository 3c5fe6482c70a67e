/**
 * CEL conditions for policy rules, via @bufbuild/cel (conformance-tested). Each expression is parsed and
 * planned once, when the policy loads; a call only evaluates the plan (a few µs), never re-parses.
 *
 * A rule's cost is bounded (docs/policy.md, "What a rule may cost"). @bufbuild/cel has no cost API, so:
 * - a rule that reads `args` sees arguments of at most `limits.max_rule_args_bytes` bytes;
 * - a rule with a comprehension (`exists`, `all`, `map`, `filter`, `exists_one`) is handed the inputs its
 *   comprehensions read (`args`, `user`, `chain`) through a {@link Meter}, which counts every field and
 *   element read and stops the evaluation past `limits.max_rule_reads`.
 * Either way the condition reports `overBudget` and the rule denies. Which rule needs what is decided when it
 * compiles, from the parsed expression: a rule without a comprehension (`args.amount > 500`) runs as before.
 */
import { type CelInput, celEnv, celList, celMap, isCelError, parse, plan } from "@bufbuild/cel";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { RE2JS } from "@bufbuild/re2";

/** The variables a condition may use. */
export const CEL_VARIABLES = ["user", "agent", "tier", "chain", "tool", "args", "now", "tenant"] as const;

/** The variables of a capability's condition (docs/capabilities.md): a rule's, and the task's data. */
export const CAPABILITY_VARIABLES = [...CEL_VARIABLES, "task"] as const;

/** The variables whose size the caller controls: what a comprehension can iterate over. */
const INPUTS: ReadonlySet<string> = new Set(["args", "user", "chain", "task"]);

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
  /** A capability's task data (capability conditions only). */
  task?: unknown;
}

/** Why a condition gave no answer. `overBudget`: it went past a limit of {@link RuleLimits}. */
export interface ConditionError {
  readonly error: string;
  readonly overBudget?: true;
}

/**
 * A compiled condition: true/false, or why evaluation failed. `argsBytes` is the size of the serialized
 * arguments (the decision input's `argsBytes`), checked against the size limit when the rule reads `args`.
 */
export type Condition = (
  activation: CelActivation,
  nowMs: number,
  argsBytes: number,
) => boolean | ConditionError;

export type CompileResult = { ok: true; condition: Condition } | { ok: false; error: string };

/** What one evaluation of a rule may cost: `limits.max_rule_reads` and `limits.max_rule_args_bytes`. */
export interface RuleLimits {
  /** Reads of `args`, `user` and `chain` one evaluation of a rule with a comprehension may make. */
  readonly maxReads: number;
  /** The largest serialized arguments a rule that reads `args` may see. */
  readonly maxArgsBytes: number;
}

/** The defaults of {@link RuleLimits}, as in the config schema's `limits`. */
export const DEFAULT_RULE_LIMITS: RuleLimits = { maxReads: 10_000, maxArgsBytes: 32_768 };

/**
 * How a condition reads its inputs, from the parsed expression.
 * - `reads`: the variables it reads at all;
 * - `metered`: the inputs it reads inside a comprehension (handed to it through the read meter);
 * - `nested`: the inputs a comprehension ranges over inside another comprehension over an input — work
 *   that grows with the product of the two sizes (e.g. `args.items.exists(a, args.items.exists(b, …))`).
 */
export interface ConditionCost {
  readonly reads: ReadonlySet<string>;
  readonly metered: readonly string[];
  readonly nested: readonly string[];
}

type Expr = ReturnType<typeof parse>["expr"];

/** The meter of the evaluation running now (evaluation is synchronous): `matches` charges its string's length. */
let running: Meter | undefined;
/** Compiled patterns: a rule's regular expression is compiled once, not once per element it is matched on. */
const patterns = new Map<string, RE2JS>();
const MAX_PATTERNS = 256;
const env = celEnv({
  re2: {
    compile(pattern: string) {
      let re = patterns.get(pattern);
      if (re === undefined) {
        if (patterns.size >= MAX_PATTERNS) patterns.clear();
        re = RE2JS.compile(pattern);
        patterns.set(pattern, re);
      }
      const compiled = re;
      return {
        test(text: string): boolean {
          // RE2 runs in linear time; inside a comprehension that time is repeated: it is charged to the budget,
          // a read per 256 characters.
          running?.spend(Math.ceil(text.length / 256));
          return compiled.test(text);
        },
      };
    },
  },
});
const ALWAYS: Condition = () => true;

/**
 * Parse and plan a CEL expression once. Unknown variables and syntax errors are reported here, at load,
 * so a typo in a rule is a config error rather than a deny on every call.
 *
 * @example
 * const c = compileCondition("args.amount > 500", { maxReads: 10_000, maxArgsBytes: 32_768 });
 * if (c.ok) c.condition(activation, Date.now(), argsBytes); // true | false | { error, overBudget? }
 */
export function compileCondition(
  expression: string,
  limits: RuleLimits = DEFAULT_RULE_LIMITS,
  variables: readonly string[] = CEL_VARIABLES,
): CompileResult {
  if (expression.trim() === "true") return { ok: true, condition: ALWAYS };
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(expression);
  } catch (e) {
    return { ok: false, error: `CEL syntax error: ${messageOf(e).replace(/^<input>:/, "at ")}` };
  }
  const unknown = unknownIdentifiers(parsed.expr, variables);
  if (unknown.length > 0) {
    return {
      ok: false,
      error: `unknown variable ${unknown.map((u) => `"${u}"`).join(", ")}: conditions may use ${variables.join(", ")}`,
    };
  }
  let evaluate: ReturnType<typeof plan>;
  try {
    evaluate = plan(env, parsed);
  } catch (e) {
    return { ok: false, error: `CEL error: ${messageOf(e)}` };
  }
  const cost = costOf(parsed.expr);
  const usesNow = cost.reads.has("now");
  const readsArgs = cost.reads.has("args");
  const metered = cost.metered as readonly (keyof CelActivation)[];
  const condition: Condition = (activation, nowMs, argsBytes) => {
    if (readsArgs && !(argsBytes <= limits.maxArgsBytes)) {
      return {
        error: `the arguments are ${argsBytes} bytes, over limits.max_rule_args_bytes (${limits.maxArgsBytes})`,
        overBudget: true,
      };
    }
    const meter = metered.length === 0 ? undefined : new Meter(limits.maxReads);
    let input: Record<string, unknown> = activation as unknown as Record<string, unknown>;
    if (meter !== undefined) {
      input = { ...input };
      for (const name of metered) input[name] = meter.wrap(activation[name]);
    }
    if (usesNow) input = { ...input, now: timestampFromMs(nowMs) };
    let result: unknown;
    running = meter;
    try {
      result = evaluate(input as never);
    } catch (e) {
      if (meter?.over === true) return meter.error();
      return { error: messageOf(e) };
    } finally {
      running = undefined;
    }
    // The meter decides, not the result: the evaluator turns a throw inside a function into a CEL error,
    // which `exists` or `||` may then absorb.
    if (meter?.over === true) return meter.error();
    if (isCelError(result)) return { error: result.message };
    if (typeof result !== "boolean") return { error: `the condition returned ${typeof result}, not a bool` };
    return result;
  };
  return { ok: true, condition };
}

/**
 * How an expression reads its inputs (see {@link ConditionCost}); undefined when it does not parse.
 *
 * @example
 * conditionCost("args.items.exists(a, args.items.exists(b, a.k == b.k && a != b))")?.nested; // ["args"]
 */
export function conditionCost(expression: string): ConditionCost | undefined {
  try {
    return costOf(parse(expression).expr);
  } catch {
    return undefined;
  }
}

function costOf(root: Expr): ConditionCost {
  const reads = new Set<string>();
  const metered = new Set<string>();
  const nested = new Set<string>();
  const visit = (e: Expr | undefined, inComprehension: boolean, overInput: boolean): void => {
    if (e === undefined) return;
    const kind = e.exprKind;
    switch (kind.case) {
      case "identExpr":
        reads.add(kind.value.name);
        if (inComprehension && INPUTS.has(kind.value.name)) metered.add(kind.value.name);
        return;
      case "selectExpr":
        visit(kind.value.operand, inComprehension, overInput);
        return;
      case "callExpr":
        visit(kind.value.target, inComprehension, overInput);
        for (const a of kind.value.args) visit(a, inComprehension, overInput);
        return;
      case "listExpr":
        for (const a of kind.value.elements) visit(a, inComprehension, overInput);
        return;
      case "structExpr":
        for (const entry of kind.value.entries) {
          if (entry.keyKind.case === "mapKey") visit(entry.keyKind.value, inComprehension, overInput);
          visit(entry.value, inComprehension, overInput);
        }
        return;
      case "comprehensionExpr": {
        const c = kind.value;
        const ranged = inputsIn(c.iterRange);
        if (overInput) for (const name of ranged) nested.add(name);
        visit(c.iterRange, true, overInput);
        visit(c.accuInit, true, overInput);
        const body = overInput || ranged.length > 0;
        for (const part of [c.loopCondition, c.loopStep, c.result]) visit(part, true, body);
        return;
      }
      default:
        return;
    }
  };
  visit(root, false, false);
  return { reads, metered: [...metered], nested: [...nested] };
}

/** The inputs an expression reads (to tell a range over `args` from one over a loop variable). */
function inputsIn(e: Expr | undefined): string[] {
  if (e === undefined) return [];
  return [...costOf(e).reads].filter((name) => INPUTS.has(name));
}

/** Thrown from inside the evaluator when a rule goes past its read budget. */
class OverBudget extends Error {}

const REAL = Symbol("onbehalf.cel.real");
type Shadow = CelInput[] & { [REAL]: readonly unknown[] };
const isEnumerable = Object.prototype.propertyIsEnumerable;

/**
 * Counts the reads a rule makes of its inputs and stops it past the budget. @bufbuild/cel converts JS
 * values lazily, on every access; the meter hands it values already converted: a plain object as a CEL map
 * over a {@link CountingMap}, an array as a CEL list over a proxy that counts each element read. So every
 * field or element a comprehension touches, each time it touches it, is one read.
 */
class Meter implements ProxyHandler<Shadow> {
  reads = 0;
  over = false;
  /** Each value is wrapped once per evaluation; the reads are counted on use, not on wrapping. */
  private readonly wrapped = new Map<object, CelInput>();
  private stop: OverBudget | undefined;

  constructor(private readonly limit: number) {}

  /** The value as the rule sees it: JSON objects and arrays wrapped (once per evaluation), the rest as is. */
  wrap(value: unknown): CelInput {
    if (typeof value !== "object" || value === null) return value as CelInput;
    let wrapped = this.wrapped.get(value);
    if (wrapped !== undefined) return wrapped;
    if (Array.isArray(value)) {
      // The proxy stands on an empty array, not on the value: a frozen array (the principal's scopes are)
      // would not let the trap return a wrapped element.
      wrapped = celList(new Proxy(Object.assign([], { [REAL]: value }), this));
    } else {
      // Only what JSON makes: anything else (a Map, bytes, a null-prototype object) is left to
      // @bufbuild/cel's own conversion, which accepts or refuses it as it always did.
      if (Object.getPrototypeOf(value) !== Object.prototype) return value as CelInput;
      wrapped = celMap(new CountingMap(value as Readonly<Record<string, unknown>>, this));
    }
    this.wrapped.set(value, wrapped);
    return wrapped;
  }

  /** The array proxy's only trap: `length` and methods pass, every other read is counted. */
  get(shadow: Shadow, key: PropertyKey): CelInput {
    const real = shadow[REAL];
    if (key === "length") return real.length;
    this.spend(1);
    return this.wrap(Reflect.get(real, key));
  }

  spend(n: number): void {
    this.reads += n;
    if (this.reads <= this.limit) return;
    this.over = true;
    // One error per evaluation: the evaluator catches a throw inside a function and reads on, each further
    // read throws again, and a new Error each time would cost a stack trace each time.
    this.stop ??= new OverBudget(`over ${this.limit} reads`);
    throw this.stop;
  }

  error(): ConditionError {
    return {
      error: `the rule read its inputs more than ${this.limit} times (limits.max_rule_reads)`,
      overBudget: true,
    };
  }
}

/** A plain object as the map @bufbuild/cel would make of it (own enumerable keys), counting each read. */
class CountingMap implements ReadonlyMap<string, CelInput> {
  constructor(
    private readonly object: Readonly<Record<string, unknown>>,
    private readonly meter: Meter,
  ) {}

  get size(): number {
    const size = Object.keys(this.object).length;
    this.meter.spend(size);
    return size;
  }

  get(key: string): CelInput | undefined {
    this.meter.spend(1);
    return this.owns(key) ? this.meter.wrap(this.object[key]) : undefined;
  }

  has(key: string): boolean {
    this.meter.spend(1);
    return this.owns(key);
  }

  *entries(): MapIterator<[string, CelInput]> {
    for (const key of this.keys()) yield [key, this.meter.wrap(this.object[key])];
  }

  *keys(): MapIterator<string> {
    for (const key of Object.keys(this.object)) {
      this.meter.spend(1);
      yield key;
    }
  }

  *values(): MapIterator<CelInput> {
    for (const [, value] of this.entries()) yield value;
  }

  forEach(callback: (value: CelInput, key: string, map: ReadonlyMap<string, CelInput>) => void): void {
    for (const [key, value] of this.entries()) callback(value, key, this);
  }

  [Symbol.iterator](): MapIterator<[string, CelInput]> {
    return this.entries();
  }

  private owns(key: unknown): key is string {
    return typeof key === "string" && isEnumerable.call(this.object, key);
  }
}

/** Identifiers the expression reads that are neither condition variables nor comprehension variables. */
function unknownIdentifiers(root: unknown, variables: readonly string[]): string[] {
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
  const known = new Set<string>(variables);
  return [...idents].filter((i) => !known.has(i) && !bound.has(i));
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
