/**
 * Read `onbehalf.yaml` (or JSON): YAML with positions, `${ENV}` substitution, schema validation, the checks
 * that need more than one field, and a caller's own check (the policy compiler). Every problem is reported at
 * once, each naming file, line, column, the field and a fix (see issues.ts).
 */
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { type Document, isMap, isScalar, LineCounter, parseDocument, visit } from "yaml";
import { OnbehalfError } from "../errors.js";
import { clientProblems } from "./clients.js";
import { issuerProblems } from "./issuer.js";
import {
  type ConfigIssue,
  describeZodIssue,
  fail,
  type Locate,
  type Path,
  type PathIssue,
  pathString,
} from "./issues.js";
import { Config } from "./schema.js";
import { exposedPrefix } from "./server.js";

/** A validated config, with what the caller's check made of it. */
export interface ReadConfig<T> {
  readonly config: Config;
  /** What the check returned (the compiled policy, say). */
  readonly checked: T;
  /** The file it came from, if any; relative paths in the config resolve against its directory. */
  readonly file: string | undefined;
  readonly baseDir: string;
  /** Problems that do not stop loading (a reference to an undeclared tool, say). */
  readonly warnings: readonly ConfigIssue[];
}

/**
 * A check of a schema-valid config by the module that uses it: its value (undefined when it cannot be made),
 * the problems that stop loading, and warnings. Issues name paths; the loader positions them.
 */
export type ConfigCheck<T> = (config: Config) => {
  readonly value: T | undefined;
  readonly issues: readonly PathIssue[];
  readonly warnings: readonly PathIssue[];
};

/**
 * Read and validate a config file, and run `check` on it (the policy compiler, say). Throws
 * `ERR_CONFIG_INVALID` with every issue in `details`.
 */
export function readConfigFile<T>(
  file: string,
  check: ConfigCheck<T>,
  env: NodeJS.ProcessEnv = process.env,
): ReadConfig<T> {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new OnbehalfError("ERR_CONFIG_INVALID", `cannot read config ${file}: ${(e as Error).message}`, {
      cause: e,
    });
  }
  return readConfigText(text, file, check, env);
}

/** Validate config text; `file` names it in messages. */
export function readConfigText<T>(
  text: string,
  file: string,
  check: ConfigCheck<T>,
  env: NodeJS.ProcessEnv = process.env,
): ReadConfig<T> {
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
  return validate(raw, file, dirname(resolve(file)), check, (path, key) => at(offsetOf(doc, path, key)));
}

/** Validate a config given as an object (the TypeScript API's inline config). Issues carry paths, no lines. */
export function readConfigObject<T>(
  raw: unknown,
  check: ConfigCheck<T>,
  baseDir: string = process.cwd(),
): ReadConfig<T> {
  return validate(raw, undefined, baseDir, check, () => ({
    file: undefined,
    line: undefined,
    column: undefined,
  }));
}

function validate<T>(
  raw: unknown,
  file: string | undefined,
  baseDir: string,
  check: ConfigCheck<T>,
  locate: Locate,
): ReadConfig<T> {
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
  const checked = check(config);
  const positioned = (i: PathIssue): ConfigIssue => ({
    ...locate(i.path),
    path: pathString(i.path),
    message: i.message,
    fix: i.fix,
  });
  issues.push(...checked.issues.map(positioned));
  if (issues.length > 0 || checked.value === undefined) fail(issues);
  return { config, checked: checked.value, file, baseDir, warnings: checked.warnings.map(positioned) };
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
    for (const p of issuerProblems(iss)) yield issue(["issuers", i, p.field], p.message, p.fix);
  }
  // Two upstreams whose exposed names could meet (`mail_` and `mail_archive_`: the tool `archive_search` of the
  // first is the second's `search`): one could serve the other's declared tool. Refused. An upstream exposed
  // without a prefix meets another one only at run time (a tool it lists under another's prefix is hidden
  // then); two without a prefix share every name, and are refused.
  const exposed = config.upstreams.map(exposedPrefix);
  for (const [i, mine] of exposed.entries()) {
    for (const [j, other] of exposed.entries()) {
      if (j <= i) continue;
      if (mine === "" && other === "") {
        yield issue(
          ["upstreams", j, "prefix"],
          `upstreams ${config.upstreams[i]!.name} and ${config.upstreams[j]!.name} are both exposed without a prefix (prefix: ""): a tool of one could take the name of a tool of the other`,
          `keep prefix: "" on one of them and give the other a prefix (prefix: ${config.upstreams[j]!.name})`,
        );
        continue;
      }
      if (mine === "" || other === "" || !(mine.startsWith(other) || other.startsWith(mine))) continue;
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
  // Registered clients: each entry whole, each client id in one tenant only (the id says which tenant it is).
  const clientTenant = new Map<string, string>();
  for (const [t, tenant] of config.tenants.entries()) {
    for (const [c, client] of tenant.clients.entries()) {
      for (const p of clientProblems(client))
        yield issue(["tenants", t, "clients", c, ...p.field], p.message, p.fix);
      const other = clientTenant.get(client.client_id);
      if (other !== undefined) {
        yield issue(
          ["tenants", t, "clients", c, "client_id"],
          `client_id ${client.client_id} is registered in tenants ${other} and ${tenant.id}`,
          "give each tenant's agent runtime a client_id of its own",
        );
      }
      clientTenant.set(client.client_id, tenant.id);
    }
    if (tenant.require_client_auth && tenant.clients.length === 0) {
      yield issue(
        ["tenants", t, "require_client_auth"],
        `tenant ${tenant.id} requires client authentication but registers no clients: every delegation would be refused`,
        "register the tenant's agent runtimes under clients:, or remove require_client_auth",
      );
    }
  }
  if (config.audit.writer_thread && !/^sqlite:(?!:memory:$)/.test(config.audit.store)) {
    yield issue(
      ["audit", "writer_thread"],
      `audit.writer_thread applies to a SQLite file store, not to ${config.audit.store.replace(/:\/\/.*@/, "://…@")}`,
      "remove writer_thread, or use store: sqlite:./onbehalf.db",
    );
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
