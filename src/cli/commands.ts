/**
 * The `onbehalf` command. Exit 0 on success, 1 on a finding (an invalid token, a failed policy test, a
 * denied explain), 2 on bad usage. Errors print their code and message in one line, never a stack trace.
 */
import { readFileSync } from "node:fs";
import { OnbehalfError } from "../errors.js";
import {
  type Command,
  consoleIo,
  EXIT_FINDING,
  EXIT_OK,
  EXIT_USAGE,
  type Io,
  parse,
  UsageError,
  usage,
} from "./args.js";
import { auditExport, auditKey, auditProof, auditQuery, auditVerify } from "./audit.js";
import { demo } from "./demo.js";
import { policyExplain, policyTest, policyValidate } from "./policy.js";
import { serve } from "./serve.js";
import { devToken, tokenInspect, tokenVerify } from "./token.js";

/** Every command, in the order the help lists them. */
export const COMMANDS: readonly Command[] = [
  serve,
  demo,
  policyValidate,
  policyTest,
  policyExplain,
  auditQuery,
  auditVerify,
  auditProof,
  auditExport,
  auditKey,
  tokenInspect,
  tokenVerify,
  devToken,
];

const HELP = new Set(["--help", "-h"]);

/** The version in package.json, two folders up from this file in src/ and in dist/ alike. */
export function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8"));
  return String((pkg as { version: unknown }).version);
}

/** The list of commands (all, or those of one group such as `audit`), each with its summary. */
function overview(group?: string): string {
  const listed = COMMANDS.filter((c) => group === undefined || c.name.startsWith(`${group} `));
  const names = listed.map((c) => [c.name, ...(c.operands ?? [])].join(" "));
  const width = Math.max(...names.map((n) => n.length));
  const what = group === undefined ? "<command>" : `${group} <subcommand>`;
  return [
    ...(group === undefined ? ["onbehalf: per-user auth for AI agents", ""] : []),
    `usage: onbehalf ${what} [options]`,
    "",
    ...listed.map((c, i) => `  ${names[i]!.padEnd(width)}  ${c.summary}`),
    "",
    `Each takes --config FILE (default ./onbehalf.yaml); \`onbehalf ${what} --help\` lists its options.`,
    ...(group === undefined
      ? ["onbehalf --version prints the version. Exit codes: 0 success, 1 a finding, 2 bad usage."]
      : []),
  ].join("\n");
}

const GROUPS = new Set(COMMANDS.filter((c) => c.name.includes(" ")).map((c) => c.name.split(" ")[0]!));

/** What `argv` asks for: a command and its arguments, or a group's overview, or a usage error for `help`. */
function resolve(argv: readonly string[]): { command: Command; rest: string[] } | { group: string } {
  const [first = "", second, ...more] = argv;
  if (!GROUPS.has(first)) {
    const command = COMMANDS.find((c) => c.name === first);
    if (command === undefined) throw new CommandUsageError(`unknown command "${first}"`, undefined);
    return { command, rest: argv.slice(1) };
  }
  if (second !== undefined && HELP.has(second)) return { group: first };
  const command = COMMANDS.find((c) => c.name === `${first} ${second}`);
  if (command === undefined) {
    const subs = COMMANDS.filter((c) => c.name.startsWith(`${first} `)).map((c) => c.name.split(" ")[1]);
    throw new CommandUsageError(
      second === undefined
        ? `${first} needs a subcommand: ${subs.join(", ")}`
        : `unknown ${first} subcommand "${second}"`,
      first,
    );
  }
  return { command, rest: more };
}

/** A usage error found before a command was chosen: points at the help of what was chosen so far. */
class CommandUsageError extends UsageError {
  constructor(
    message: string,
    readonly helpOf: string | undefined,
  ) {
    super(message);
  }
}

/** Run the CLI with `argv` (without node and script); resolves to the exit code. */
export async function main(argv: string[], io: Io = consoleIo): Promise<number> {
  const [first] = argv;
  if (first === undefined) {
    io.err(overview());
    return EXIT_USAGE;
  }
  if (HELP.has(first) || first === "help") {
    return help(argv.slice(1), io);
  }
  if (first === "--version" || first === "-V") {
    io.out(version());
    return EXIT_OK;
  }
  let helpOf: string | undefined;
  try {
    const target = resolve(argv);
    if ("group" in target) {
      io.out(overview(target.group));
      return EXIT_OK;
    }
    helpOf = target.command.name;
    const args = parse(target.rest, target.command);
    if (args.values["help"] === true) {
      io.out(usage(target.command));
      return EXIT_OK;
    }
    return await target.command.run(args, io);
  } catch (e) {
    const of = e instanceof CommandUsageError ? e.helpOf : helpOf;
    const see = `(see onbehalf ${of === undefined ? "" : `${of} `}--help)`;
    if (e instanceof UsageError) {
      io.err(`onbehalf: ${e.message} ${see}`);
      return EXIT_USAGE;
    }
    if (e instanceof OnbehalfError) {
      const usageProblem = e.code === "ERR_INVALID_ARGUMENT";
      io.err(`onbehalf: ${e.code}: ${e.message}${usageProblem ? ` ${see}` : ""}`);
      return usageProblem ? EXIT_USAGE : EXIT_FINDING;
    }
    const sys = e as NodeJS.ErrnoException;
    if (typeof sys?.code === "string" && typeof sys.path === "string") {
      io.err(`onbehalf: cannot use ${sys.path}: ${sys.code} (${sys.message})`);
      return EXIT_FINDING;
    }
    throw e;
  }
}

/** `onbehalf help [command …]`: the overview, a group's, or one command's usage. */
function help(words: readonly string[], io: Io): number {
  const name = words.join(" ");
  const command = COMMANDS.find((c) => c.name === name);
  if (command !== undefined) io.out(usage(command));
  else if (GROUPS.has(name)) io.out(overview(name));
  else if (name === "") io.out(overview());
  else {
    io.err(`onbehalf: no command "${name}" (see onbehalf --help)`);
    return EXIT_USAGE;
  }
  return EXIT_OK;
}
