#!/usr/bin/env node
/** Entry point of the `onbehalf` bin: run the command line and exit with its code. */
import { EXIT_FINDING } from "./args.js";
import { main } from "./commands.js";

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    console.error(e);
    process.exitCode = EXIT_FINDING;
  },
);
