/**
 * Small helpers shared by the CLI commands: argument parsing on node:util's parseArgs, and the exit codes
 * of CONTRACT.md (0 success, 1 a finding, 2 bad usage).
 */
import { existsSync } from "node:fs";
import { type ParseArgsConfig, parseArgs } from "node:util";

export const EXIT_OK = 0;
export const EXIT_FINDING = 1;
export const EXIT_USAGE = 2;

/** Bad usage: the command line itself is wrong. Printed with the command's usage, exit 2. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

/** Where a command writes; tests pass their own. */
export interface Io {
  out(line: string): void;
  err(line: string): void;
}

export const consoleIo: Io = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

type Options = NonNullable<ParseArgsConfig["options"]>;

/** Parsed flags: strings and booleans by name, and the positional arguments. */
export interface ParsedArgs {
  values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  positionals: string[];
}

/** Parse `argv` with `options` (plus `--config`); unknown flags are a UsageError. */
export function parse(argv: string[], options: Options): ParsedArgs {
  try {
    return parseArgs({
      args: argv,
      options: { config: { type: "string" }, ...options },
      allowPositionals: true,
      strict: true,
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** The config path: `--config`, else ./onbehalf.yaml if present. */
export function configPath(value: unknown): string {
  if (typeof value === "string") return value;
  if (existsSync("onbehalf.yaml")) return "onbehalf.yaml";
  throw new UsageError(
    "no config: pass --config FILE (or create ./onbehalf.yaml; see examples/onbehalf.yaml)",
  );
}

/** A space- or comma-separated list flag. */
export function list(value: unknown): string[] {
  return typeof value === "string" ? value.split(/[\s,]+/).filter((s) => s !== "") : [];
}

/** A required string flag. */
export function required(value: unknown, flag: string): string {
  if (typeof value !== "string" || value === "") throw new UsageError(`--${flag} is required`);
  return value;
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
