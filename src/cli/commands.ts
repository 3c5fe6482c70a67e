/**
 * The `onbehalf` command. Exit 0 on success, 1 on a finding (an invalid token, a failed policy test, a
 * denied explain), 2 on bad usage. Errors print their code and message, never a stack trace.
 */
import { OnbehalfError } from "../errors.js";
import { consoleIo, EXIT_FINDING, EXIT_USAGE, type Io, UsageError } from "./args.js";
import { AUDIT_USAGE, auditCommand } from "./audit.js";
import { demoCommand } from "./demo.js";
import { POLICY_USAGE, policyCommand } from "./policy.js";
import { serveCommand } from "./serve.js";
import { devTokenCommand, TOKEN_USAGE, tokenCommand } from "./token.js";

const USAGE = `onbehalf: per-user auth for AI agents

usage: onbehalf <command> [options]   (every command takes --config FILE, default ./onbehalf.yaml)

  serve [--port N]         the control plane (HTTP API; docs/server.md)
  demo                     the in-process tour on a config with dev_issuer: true
  policy validate|test|explain
  audit query|verify|proof|export|key
  token inspect|verify JWT
  dev-token --sub S --tenant T --scopes "a b"

${POLICY_USAGE}
${AUDIT_USAGE}
${TOKEN_USAGE}`;

const COMMANDS: Record<string, (argv: string[], io: Io) => Promise<number>> = {
  serve: serveCommand,
  demo: demoCommand,
  policy: policyCommand,
  audit: auditCommand,
  token: tokenCommand,
  "dev-token": devTokenCommand,
};

/** Run the CLI with `argv` (without node and script); resolves to the exit code. */
export async function main(argv: string[], io: Io = consoleIo): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === "help" || command === "--help" || command === "-h") {
    io.out(USAGE);
    return command === undefined ? EXIT_USAGE : 0;
  }
  const run = COMMANDS[command];
  try {
    if (run === undefined) throw new UsageError(`unknown command "${command}"`);
    return await run(rest, io);
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`onbehalf: ${e.message}\n\n${USAGE}`);
      return EXIT_USAGE;
    }
    if (e instanceof OnbehalfError) {
      io.err(`onbehalf: ${e.code}: ${e.message}`);
      return e.code === "ERR_INVALID_ARGUMENT" ? EXIT_USAGE : EXIT_FINDING;
    }
    const sys = e as NodeJS.ErrnoException;
    if (typeof sys?.code === "string" && typeof sys.path === "string") {
      io.err(`onbehalf: cannot use ${sys.path}: ${sys.code} (${sys.message})`);
      return EXIT_FINDING;
    }
    throw e;
  }
}
