/**
 * Configuration problems as people read them: each names the file, line and column, the field, what is wrong
 * and how to fix it. Zod's issues are turned into such messages here (unknown fields with "did you mean",
 * values outside a set, wrong shapes), and so is every other check's finding.
 */
import type { z } from "zod";
import { OnbehalfError } from "../errors.js";
import { Config } from "./schema.js";

/** One problem in a config, positioned when the config came from a file. */
export interface ConfigIssue {
  readonly file: string | undefined;
  readonly line: number | undefined;
  readonly column: number | undefined;
  /** The field, as `tenants[0].policy.rules[1].when`. */
  readonly path: string;
  readonly message: string;
  readonly fix: string | undefined;
}

/** A path into the config, as zod and the YAML document give it. */
export type Path = readonly PropertyKey[];

/** Where a path is in the file the config came from (nothing when it came from an object). */
export type Locate = (path: Path, key?: string) => Pick<ConfigIssue, "file" | "line" | "column">;

/** A problem found at a path of a validated config; the loader positions it. */
export interface PathIssue {
  readonly path: Path;
  readonly message: string;
  readonly fix?: string | undefined;
}

/** Render an issue as `file:line:col: path: message. Fix: …`. */
export function formatIssue(issue: ConfigIssue): string {
  const where = issue.file === undefined ? "" : `${issue.file}:${issue.line ?? 0}:${issue.column ?? 0}: `;
  const field = issue.path === "" ? "" : `${issue.path}: `;
  return `${where}${field}${issue.message}${issue.fix === undefined ? "" : `. Fix: ${issue.fix}`}`;
}

/** Throw `ERR_CONFIG_INVALID` listing every issue (in `details` too). */
export function fail(issues: ConfigIssue[]): never {
  const message = ["invalid configuration:", ...issues.map((i) => `  ${formatIssue(i)}`)].join("\n");
  throw new OnbehalfError("ERR_CONFIG_INVALID", message, { details: issues });
}

/** A path as a reader writes it: `tenants[0].policy.rules[1].when`. */
export function pathString(path: Path): string {
  let out = "";
  for (const seg of path) {
    if (typeof seg === "number") out += `[${seg}]`;
    else if (typeof seg === "string" && /^[A-Za-z_][A-Za-z0-9_]*$/.test(seg))
      out += out === "" ? seg : `.${seg}`;
    else out += `[${JSON.stringify(String(seg))}]`;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Zod issues → messages with fixes

export function describeZodIssue(issue: z.core.$ZodIssue, locate: Locate): ConfigIssue[] {
  const path = issue.path;
  const here = (message: string, fix?: string, key?: string): ConfigIssue => ({
    ...locate(path, key),
    path: pathString(key === undefined ? path : [...path, key]),
    message,
    fix,
  });
  switch (issue.code) {
    case "unrecognized_keys": {
      const allowed = allowedKeysAt(path);
      return issue.keys.map((key) => {
        const guess = closest(key, allowed);
        const list = allowed.length > 0 ? `allowed here: ${allowed.join(", ")}` : undefined;
        const what = allowed.includes("interactive") ? "tier" : "field";
        return here(
          `unknown ${what} "${key}"`,
          guess === undefined ? list : `did you mean "${guess}"? (${list})`,
          key,
        );
      });
    }
    case "invalid_value": {
      const options = issue.values.map((v) => String(v));
      const got = issue.input;
      if (typeof got === "string" && got.toLowerCase() === "none" && path.includes("algorithms")) {
        return [here('"none" is never accepted: unsigned tokens prove nothing', "remove it from algorithms")];
      }
      const guess = typeof got === "string" ? closest(got, options) : undefined;
      return [
        here(
          `${JSON.stringify(got)} is not one of ${options.join(", ")}`,
          guess === undefined ? `use one of ${options.join(", ")}` : `did you mean "${guess}"?`,
        ),
      ];
    }
    case "invalid_type":
      return [
        issue.input === undefined
          ? here(`required field is missing (expected ${issue.expected})`, `add ${pathString(path)}`)
          : here(`expected ${issue.expected}, got ${describe(issue.input)}`),
      ];
    case "invalid_union": {
      const first = issue.errors[0]?.[0];
      if (first && first.code !== "invalid_type")
        return describeZodIssue({ ...first, path: [...path, ...first.path] }, locate);
      return [here(`this value has the wrong shape (${issue.message})`, unionHint(path))];
    }
    default:
      return [here(issue.message.replace(/^Invalid input: /, ""))];
  }
}

function unionHint(path: Path): string | undefined {
  const last = path[path.length - 1];
  if (last === "tenant") return 'a claim path such as org_id, or a literal: { value: "acme" }';
  if (last === "audience" || last === "scopes" || last === "roles") return "a string or a list of strings";
  if (last === "auth")
    return "{ type: none }, { type: obo, audience: URL } or { type: static, header, value }";
  return undefined;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  return `${typeof value} ${JSON.stringify(value)}`;
}

/** The field names the schema allows at `path` (walks zod's definition; empty if unknown). */
function allowedKeysAt(path: Path): string[] {
  let node: unknown = Config;
  for (const seg of path) {
    node = unwrap(node);
    const def = defOf(node);
    if (def?.type === "object") node = (def.shape as Record<string, unknown>)[String(seg)];
    else if (def?.type === "array") node = def.element;
    else if (def?.type === "record") node = def.valueType;
    else return [];
  }
  const def = defOf(unwrap(node));
  if (def?.type === "object") return Object.keys(def.shape as object);
  if (def?.type === "record") return keyOptions(def.keyType);
  return [];
}

function keyOptions(keyType: unknown): string[] {
  const def = defOf(keyType);
  if (def?.type === "enum") return Object.values(def.entries as Record<string, string>);
  if (def?.type === "literal") return (def.values as unknown[]).map(String);
  if (def?.type === "union") return (def.options as unknown[]).flatMap(keyOptions);
  return [];
}

function unwrap(node: unknown): unknown {
  let def = defOf(node);
  while (def && (def.type === "default" || def.type === "optional" || def.type === "nullable")) {
    node = def.innerType;
    def = defOf(node);
  }
  return node;
}

function defOf(node: unknown): Record<string, unknown> | undefined {
  return (node as { _zod?: { def?: Record<string, unknown> } } | undefined)?._zod?.def;
}

/** The closest candidate by edit distance, if it is close enough to be a plausible typo. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(word.length / 3)) + 1;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}
