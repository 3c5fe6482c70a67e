/**
 * What every CLI command is made of: a record that names its flags and operands (data), from which both the
 * parser (node:util's parseArgs) and the usage text are derived, so the two cannot disagree; and the exit
 * codes of CONTRACT.md (0 success, 1 a finding, 2 bad usage).
 */
import { existsSync } from "node:fs";
import { type ParseArgsConfig, parseArgs } from "node:util";

export const EXIT_OK = 0;
export const EXIT_FINDING = 1;
export const EXIT_USAGE = 2;

/** Bad usage: the command line itself is wrong. Printed in one line pointing at `--help`, exit 2. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

/** A terminal to draw progress on (stderr, or a test's stand-in). */
export interface Terminal {
  readonly isTTY?: boolean;
  readonly columns?: number;
  write(chunk: string): unknown;
}

/** Where a command writes; tests pass their own. */
export interface Io {
  out(line: string): void;
  err(line: string): void;
  /** Where progress may be drawn: only when it is a TTY. */
  readonly terminal?: Terminal;
  /** Standard output is a terminal (a progress bar would mix with the output). */
  readonly outIsTTY?: boolean;
}

export const consoleIo: Io = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
  terminal: process.stderr,
  outIsTTY: process.stdout.isTTY === true,
};

/** One flag of a command: how it parses, and how its usage shows it. */
export interface Flag {
  readonly type: "string" | "boolean";
  /** The value's name in the usage (string flags): `N`, `FILE`. */
  readonly value?: string;
  readonly help: string;
  readonly short?: string;
  readonly multiple?: boolean;
  /** A string flag the command cannot run without (checked by the parser, shown without brackets). */
  readonly required?: boolean;
  readonly default?: string | boolean;
}

export type Flags = Readonly<Record<string, Flag>>;

/** A string flag whose value the usage calls `value`. */
export function text(value: string, help: string, more: Omit<Flag, "type" | "value" | "help"> = {}): Flag {
  return { type: "string", value, help, ...more };
}

/** Parsed flags: strings and booleans by name, and the positional arguments. */
export interface ParsedArgs {
  values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  positionals: string[];
}

/** A command of `onbehalf`, as data: its name, operands, flags and what it does. */
export interface Command {
  /** The words that name it: `serve`, `audit verify`. */
  readonly name: string;
  /** Its positional arguments, in order; `[FILE]` is optional. More than these is bad usage. */
  readonly operands?: readonly string[];
  /** One line: what it does. */
  readonly summary: string;
  readonly flags: Flags;
  /** Lines printed after the options in its help. */
  readonly notes?: string;
  run(args: ParsedArgs, io: Io): Promise<number> | number;
}

/** The flags every command takes. */
export const COMMON_FLAGS: Flags = {
  config: text("FILE", "the config (default ./onbehalf.yaml)"),
  help: { type: "boolean", short: "h", help: "print this help and exit" },
};

/** Every flag `command` accepts: its own and the common ones. */
export function flagsOf(command: Command): Flags {
  return { ...command.flags, ...COMMON_FLAGS };
}

/**
 * Parse `argv` for `command`. Unknown flags, missing required flags or operands, and extra operands are a
 * UsageError; with `--help` only the flags are checked.
 */
export function parse(argv: string[], command: Command): ParsedArgs {
  const flags = flagsOf(command);
  const options: NonNullable<ParseArgsConfig["options"]> = {};
  for (const [name, f] of Object.entries(flags)) {
    options[name] = {
      type: f.type,
      ...(f.short === undefined ? {} : { short: f.short }),
      ...(f.multiple === undefined ? {} : { multiple: f.multiple }),
      ...(f.default === undefined ? {} : { default: f.default }),
    } as NonNullable<ParseArgsConfig["options"]>[string];
  }
  let args: ParsedArgs;
  try {
    args = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError(parseArgsMessage(e as Error));
  }
  if (args.values["help"] === true) return args;
  for (const [name, f] of Object.entries(flags)) {
    const v = args.values[name];
    if (f.required === true && (typeof v !== "string" || v === ""))
      throw new UsageError(`--${name} is required`);
  }
  const operands = command.operands ?? [];
  const extra = args.positionals[operands.length];
  if (extra !== undefined) throw new UsageError(`unexpected argument "${extra}"`);
  const missing = operands.find((o, i) => !o.startsWith("[") && args.positionals[i] === undefined);
  if (missing !== undefined) throw new UsageError(`${command.name} needs ${missing}`);
  return args;
}

/** parseArgs' message, in one short line. */
function parseArgsMessage(e: Error): string {
  const unknown = /^Unknown option '([^']+)'/.exec(e.message);
  if (unknown !== null) return `unknown option "${unknown[1]}"`;
  return (e.message.split(/\.(?: |$)/)[0] ?? e.message).replace(/^Option/, "option");
}

/** A flag as the synopsis shows it: `--port N`, `--key KEY ...`. */
function flagSynopsis(name: string, f: Flag): string {
  const value = f.type === "string" ? ` ${f.value ?? "VALUE"}` : "";
  return `--${name}${value}${f.multiple === true ? " ..." : ""}`;
}

/** `usage: onbehalf <name> <operands> [flags]`, wrapped to fit 100 columns. */
function synopsis(command: Command): string {
  const words = [
    ...(command.operands ?? []),
    ...Object.entries(flagsOf(command))
      .filter(([name]) => name !== "help")
      .map(([name, f]) => (f.required === true ? flagSynopsis(name, f) : `[${flagSynopsis(name, f)}]`)),
  ];
  const head = `usage: onbehalf ${command.name}`;
  const lines = [head];
  for (const word of words) {
    if (lines[lines.length - 1]!.length + 1 + word.length > 100) lines.push(" ".repeat(head.length));
    lines[lines.length - 1] += ` ${word}`;
  }
  return lines.join("\n");
}

/** The help of one command: synopsis, what it does, every flag it takes. */
export function usage(command: Command): string {
  const rows = Object.entries(flagsOf(command)).map(([name, f]): [string, string] => [
    `${f.short === undefined ? "" : `-${f.short}, `}${flagSynopsis(name, f)}`,
    `${f.help}${f.default === undefined || f.default === false ? "" : ` (default ${String(f.default)})`}`,
  ]);
  const width = Math.max(...rows.map(([left]) => left.length));
  return [
    synopsis(command),
    "",
    command.summary,
    "",
    "options:",
    ...rows.map(([left, right]) => `  ${left.padEnd(width)}  ${right}`),
    ...(command.notes === undefined ? [] : ["", command.notes]),
  ].join("\n");
}

/** The config path: `--config`, else ./onbehalf.yaml if present. */
export function configPath(value: unknown): string {
  if (typeof value === "string") return value;
  if (existsSync("onbehalf.yaml")) return "onbehalf.yaml";
  throw new UsageError("no config: pass --config FILE or create ./onbehalf.yaml, as examples/onbehalf.yaml");
}

/** A space- or comma-separated list flag. */
export function list(value: unknown): string[] {
  return typeof value === "string" ? value.split(/[\s,]+/).filter((s) => s !== "") : [];
}

/** Parse a JSON flag value, or say what is wrong with it. */
export function json(value: unknown, flag: string): unknown {
  if (value === undefined) return undefined;
  try {
    return JSON.parse(String(value));
  } catch (e) {
    throw new UsageError(`--${flag} is not valid JSON: ${(e as Error).message}`);
  }
}
