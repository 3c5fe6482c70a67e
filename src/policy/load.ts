/**
 * Load `onbehalf.yaml` (or JSON): YAML with positions, `${ENV}` substitution, schema validation, policy
 * compilation. Every problem is reported at once, each naming file, line, column, the field and a fix.
 */
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { type Document, isMap, isScalar, LineCounter, parseDocument, visit } from "yaml";
import type { z } from "zod";
import { OnbehalfError } from "../errors.js";
import { conditionCost } from "./cel.js";
import { type CompiledPolicy, compilePolicy } from "./compile.js";
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

export interface LoadedConfig {
  readonly config: Config;
  readonly policy: CompiledPolicy;
  /** The file it came from, if any; relative paths in the config resolve against its directory. */
  readonly file: string | undefined;
  readonly baseDir: string;
  /** Problems that do not stop loading (a reference to an undeclared tool, say). */
  readonly warnings: readonly ConfigIssue[];
}

type Path = readonly PropertyKey[];

/** Render an issue as `file:line:col: path: message. Fix: …`. */
export function formatIssue(issue: ConfigIssue): string {
  const where = issue.file === undefined ? "" : `${issue.file}:${issue.line ?? 0}:${issue.column ?? 0}: `;
  const field = issue.path === "" ? "" : `${issue.path}: `;
  return `${where}${field}${issue.message}${issue.fix === undefined ? "" : `. Fix: ${issue.fix}`}`;
}

/**
 * Read and validate a config file. Throws `ERR_CONFIG_INVALID` with every issue in `details`.
 *
 * @example
 * const { config, policy } = loadConfigFile("onbehalf.yaml");
 */
export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new OnbehalfError("ERR_CONFIG_INVALID", `cannot read config ${file}: ${(e as Error).message}`, {
      cause: e,
    });
  }
  return loadConfigText(text, file, env);
}

/** Validate config text; `file` names it in messages. */
export function loadConfigText(
  text: string,
  file: string,
  env: NodeJS.ProcessEnv = process.env,
): LoadedConfig {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number | undefined) => {
    const pos = offset === undefined ? undefined : lines.linePos(offset);
    return { file, line: pos?.line, column: pos?.col };
  };
  if (doc.errors.length > 0) {
    fail(
      doc.errors.map((e) => ({
        ...at(e.pos[0]),
        path: "",
        message: `not valid YAML: ${e.message.split("\n")[0]}`,
        fix: "check indentation and quoting on this line",
      })),
    );
  }
  const envIssues = substituteEnv(doc, env).map(({ offset, message, fix }) => ({
    ...at(offset),
    path: "",
    message,
    fix,
  }));
  if (envIssues.length > 0) fail(envIssues);
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 100 }) ?? {};
  } catch (e) {
    // e.g. an alias expanded too many times ("billion laughs")
    fail([
      {
        file,
        line: undefined,
        column: undefined,
        path: "",
        message: `cannot read the YAML: ${(e as Error).message}`,
        fix: "use fewer aliases",
      },
    ]);
  }
  return validate(raw, file, dirname(resolve(file)), (path, key) => at(offsetOf(doc, path, key)));
}

/**
 * Validate a config given as an object (the TypeScript API's inline config). Issues carry paths, no lines.
 *
 * @example
 * const { policy } = loadConfigObject({ tools: [{ name: "t" }], tenants: [{ id: "acme" }] });
 */
export function loadConfigObject(raw: unknown, baseDir: string = process.cwd()): LoadedConfig {
  return validate(raw, undefined, baseDir, () => ({ file: undefined, line: undefined, column: undefined }));
}

type Locate = (path: Path, key?: string) => Pick<ConfigIssue, "file" | "line" | "column">;

function validate(raw: unknown, file: string | undefined, baseDir: string, locate: Locate): LoadedConfig {
  // zod drops "__proto__" keys silently: a policy entry so named would vanish and the call fall through to
  // the defaults. Refuse them before anything else.
  const protoKeys = protoKeyPaths(raw).map((path) => ({
    ...locate(path, "__proto__"),
    path: pathString([...path, "__proto__"]),
    message: 'the key "__proto__" is not allowed',
    fix: "rename it: it cannot name a user, tool, tenant or field",
  }));
  if (protoKeys.length > 0) fail(protoKeys);
  const parsed = Config.safeParse(raw, { reportInput: true });
  if (!parsed.success)
    fail(parsed.error.issues.flatMap((issue) => describeZodIssue(issue, locate)).sort(byLine));
  const config = parsed.data;
  const issues = [...semanticIssues(config, locate)];
  const compiled = compilePolicy(config);
  if (!compiled.ok) {
    for (const i of compiled.issues)
      issues.push({ ...locate(i.path), path: pathString(i.path), message: i.message, fix: undefined });
  }
  if (issues.length > 0 || !compiled.ok) fail(issues);
  return { config, policy: compiled.policy, file, baseDir, warnings: referenceWarnings(config, locate) };
}

/** Paths of the objects under `value` that have an own "__proto__" key. */
function protoKeyPaths(value: unknown, path: Path = []): Path[] {
  if (value === null || typeof value !== "object") return [];
  const own = Object.getOwnPropertyNames(value);
  const out: Path[] = own.includes("__proto__") ? [path] : [];
  for (const key of own) {
    if (key !== "__proto__")
      out.push(
        ...protoKeyPaths((value as Record<string, unknown>)[key], [
          ...path,
          Array.isArray(value) ? Number(key) : key,
        ]),
      );
  }
  return out;
}

function byLine(a: ConfigIssue, b: ConfigIssue): number {
  return (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0);
}

function fail(issues: ConfigIssue[]): never {
  const message = ["invalid configuration:", ...issues.map((i) => `  ${formatIssue(i)}`)].join("\n");
  throw new OnbehalfError("ERR_CONFIG_INVALID", message, { details: issues });
}

// ---------------------------------------------------------------------------------------------------------
// Environment substitution: ${NAME} or ${NAME:-default}, in scalar values only.

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

function substituteEnv(
  doc: Document,
  env: NodeJS.ProcessEnv,
): { offset: number | undefined; message: string; fix: string }[] {
  const issues: { offset: number | undefined; message: string; fix: string }[] = [];
  visit(doc, {
    Scalar(key, node) {
      if (typeof node.value !== "string" || !node.value.includes("${")) return;
      if (key === "key") {
        // substituting into a key would change which user or tool an entry is about: not supported
        issues.push({
          offset: node.range?.[0],
          message: `\${…} in a key is not substituted: "${node.value}"`,
          fix: "write the user, tool or tenant name itself; only values may use environment variables",
        });
        return;
      }
      node.value = node.value.replace(ENV_REF, (_all, name: string, fallback: string | undefined) => {
        const value = env[name];
        if (value !== undefined && value !== "") return value;
        if (fallback !== undefined) return fallback;
        issues.push({
          offset: node.range?.[0],
          message: `environment variable ${name} is not set`,
          fix: `set ${name}, or write \${${name}:-default} to give a default`,
        });
        return "";
      });
    },
  });
  return issues;
}

// ---------------------------------------------------------------------------------------------------------
// Positions

function offsetOf(doc: Document, path: Path, key?: string): number | undefined {
  for (let n = path.length; n >= 0; n--) {
    const node = doc.getIn(path.slice(0, n) as unknown[], true) as
      | { range?: [number, number, number] }
      | undefined;
    if (node === undefined) continue;
    if (n === path.length && key !== undefined && isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && p.key.value === key);
      const keyNode = pair?.key as { range?: [number, number, number] } | undefined;
      if (keyNode?.range) return keyNode.range[0];
    }
    if (node.range) return node.range[0];
  }
  return undefined;
}

function pathString(path: Path): string {
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

function describeZodIssue(issue: z.core.$ZodIssue, locate: Locate): ConfigIssue[] {
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

// ---------------------------------------------------------------------------------------------------------
// Checks that need more than one field

function* semanticIssues(config: Config, locate: Locate): Generator<ConfigIssue> {
  const issue = (path: Path, message: string, fix?: string): ConfigIssue => ({
    ...locate(path),
    path: pathString(path),
    message,
    fix,
  });
  for (const [i, iss] of config.issuers.entries()) {
    const at = ["issuers", i];
    if (iss.jwks !== undefined && iss.jwks_uri !== null) {
      yield issue([...at, "jwks"], "give either jwks or jwks_uri, not both");
    }
    const hs = iss.algorithms.filter((a) => a.startsWith("HS"));
    if (hs.length > 0 && iss.secret === undefined) {
      yield issue(
        [...at, "algorithms"],
        `${hs.join(", ")} needs a shared secret`,
        "add secret: ${YOUR_SECRET_ENV}, or remove the HS algorithms (asymmetric keys are safer)",
      );
    }
    for (const [key, url] of [
      ["issuer", iss.issuer],
      ["jwks_uri", iss.jwks_uri],
    ] as const) {
      if (url !== null && !iss.allow_insecure_http && isInsecureRemoteHttp(url)) {
        yield issue(
          [...at, key],
          `${url} is plain http on a non-loopback host: keys fetched from it could be forged`,
          "use https, or set allow_insecure_http: true on a test network",
        );
      }
    }
  }
  // Two upstreams whose exposed names could meet (`mail_` and `mail_archive_`: the tool `archive_search` of the
  // first is the second's `search`): one could serve the other's declared tool. Refused.
  const exposed = config.upstreams.map((up) => `${up.prefix ?? up.name}${up.separator}`);
  for (const [i, mine] of exposed.entries()) {
    for (const [j, other] of exposed.entries()) {
      if (j <= i || !(mine.startsWith(other) || other.startsWith(mine))) continue;
      yield issue(
        ["upstreams", j],
        `upstreams ${config.upstreams[i]!.name} and ${config.upstreams[j]!.name} expose tools as ${mine}… and ${other}…: a tool of one could take the name of a tool of the other`,
        "give them prefixes that neither starts the other (prefix: crm, prefix: mail), or the same separator with distinct prefixes",
      );
    }
  }
  for (const [i, up] of config.upstreams.entries()) {
    if (up.transport === "streamable-http" && up.url === undefined) {
      yield issue(["upstreams", i], "a streamable-http upstream needs url", "add url: http://host:port/mcp");
    }
    if (up.transport === "stdio" && up.command === undefined) {
      yield issue(
        ["upstreams", i],
        "a stdio upstream needs command",
        "add command: node and args: [server.js]",
      );
    }
  }
  const tokens = config.server.admin_tokens.filter((t) => t !== "");
  for (const [i, t] of tokens.entries()) {
    if (t.length < 16) {
      yield issue(
        ["server", "admin_tokens", i],
        "admin tokens must be at least 16 characters",
        "use a long random token",
      );
    }
  }
}

function isInsecureRemoteHttp(url: string): boolean {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return false;
  }
  if (parsed.protocol !== "http:") return false;
  return !["127.0.0.1", "localhost", "[::1]"].includes(parsed.hostname);
}

/** References to tools that are not declared: likely typos, but tools may also be declared in code. */
function referenceWarnings(config: Config, locate: Locate): ConfigIssue[] {
  const declared = config.tools.map((t) => t.name);
  const known = new Set(declared);
  const out: ConfigIssue[] = [];
  const check = (name: string, path: Path) => {
    if (name === "*" || known.has(name)) return;
    const guess = closest(name, declared);
    out.push({
      ...locate(path),
      path: pathString(path),
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
          ...locate(path),
          path: pathString(path),
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
