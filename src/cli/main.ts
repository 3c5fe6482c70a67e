#!/usr/bin/env node
/** Entry point of the `onbehalf` bin: run the command line and exit with its code. */
import { EXIT_FINDING } from "./args.js";
import { main } from "./commands.js";

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    // A bug, not a usage or config problem: say so in one line; ONBEHALF_DEBUG=1 prints the stack.
    const message = e instanceof Error ? e.message : String(e);
    console.error(
      `onbehalf: internal error: ${message}${process.env["ONBEHALF_DEBUG"] === "1" ? "" : " (ONBEHALF_DEBUG=1 shows the stack)"}`,
    );
    if (process.env["ONBEHALF_DEBUG"] === "1") console.error(e);
    process.exitCode = EXIT_FINDING;
  },
);
