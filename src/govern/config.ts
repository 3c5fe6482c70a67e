/**
 * The configuration as the application loads it: read and validated by config/, its policy compiled by policy/.
 * Everything that starts from `onbehalf.yaml` (the governor, the server, the CLI) loads it here.
 */

import type { ConfigIssue } from "../config/issues.js";
import { readConfigFile, readConfigObject, readConfigText } from "../config/load.js";
import type { Config } from "../config/schema.js";
import { checkPolicy } from "../policy/check.js";
import type { CompiledPolicy } from "../policy/compile.js";

/** A validated config and its compiled policy. */
export interface LoadedConfig {
  readonly config: Config;
  readonly policy: CompiledPolicy;
  /** The file it came from, if any; relative paths in the config resolve against its directory. */
  readonly file: string | undefined;
  readonly baseDir: string;
  /** Problems that do not stop loading (a reference to an undeclared tool, say). */
  readonly warnings: readonly ConfigIssue[];
}

/**
 * Read, validate and compile a config file. Throws `ERR_CONFIG_INVALID` with every issue (file, line, field,
 * fix) in `details`.
 *
 * @example
 * const { config, policy } = loadConfigFile("onbehalf.yaml");
 */
export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  return loaded(readConfigFile(file, checkPolicy, env));
}

/** Validate and compile config text; `file` names it in messages. */
export function loadConfigText(
  text: string,
  file: string,
  env: NodeJS.ProcessEnv = process.env,
): LoadedConfig {
  return loaded(readConfigText(text, file, checkPolicy, env));
}

/**
 * Validate and compile a config given as an object (the TypeScript API's inline config). Issues carry paths.
 *
 * @example
 * const { policy } = loadConfigObject({ tools: [{ name: "t" }], tenants: [{ id: "acme" }] });
 */
export function loadConfigObject(raw: unknown, baseDir: string = process.cwd()): LoadedConfig {
  return loaded(readConfigObject(raw, checkPolicy, baseDir));
}

function loaded(read: ReturnType<typeof readConfigFile<CompiledPolicy>>): LoadedConfig {
  const { checked, ...rest } = read;
  return { ...rest, policy: checked };
}
