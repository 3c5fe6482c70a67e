/**
 * Tools declared in code (`gov.governed`, `gov.declare`, the adapters), and how they join the config's tools:
 * a declaration only ever adds required scopes and redaction paths, never drops them.
 */

import { ToolConfig } from "../config/policy.js";
import type { Config } from "../config/schema.js";
import { OnbehalfError } from "../errors.js";
import { type CompiledPolicy, type CompiledTool, type CompileIssue, compileTool } from "../policy/compile.js";
import { lintTool } from "./lint.js";

/** A tool's policy fields as code declares them; they add to the config's entry for the same name. */
export interface ToolDeclaration {
  readonly name: string;
  readonly description?: string;
  readonly required_scopes?: readonly string[];
  readonly sensitivity?: ToolConfig["sensitivity"];
  readonly redact?: readonly string[];
  /** JSON Schema of the arguments (read by the narrow-tool lint). */
  readonly input_schema?: Readonly<Record<string, unknown>>;
}

/** The tools declared in code, merged into each policy the config compiles to. */
export class ToolRegistry {
  private readonly declared = new Map<string, ToolConfig>();

  constructor(private readonly warn: (message: string) => void) {}

  /**
   * Add (or add to) a declaration, and return `policy` with it merged in. Throws `ERR_INVALID_ARGUMENT` for a
   * declaration that does not validate or compile; the registry is then as it was.
   */
  declare(definition: ToolDeclaration, policy: CompiledPolicy, config: Config): CompiledPolicy {
    const parsed = ToolConfig.safeParse({
      name: definition.name,
      description: definition.description,
      required_scopes: definition.required_scopes,
      sensitivity: definition.sensitivity,
      redact: definition.redact,
      input_schema: definition.input_schema,
    });
    if (!parsed.success) {
      throw new OnbehalfError(
        "ERR_INVALID_ARGUMENT",
        `tool "${definition.name}": ${parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`,
      );
    }
    const warning = lintTool(
      definition.name,
      definition.input_schema ?? configTool(definition.name, config)?.input_schema,
    );
    if (warning !== undefined) this.warn(warning);
    const previous = this.declared.get(definition.name);
    // Declaring a tool again (an adapter, then gov.governed, say) adds to what was declared: it never drops a
    // required scope or a redaction path. Other fields take the newer declaration's value where it gives one.
    const next: ToolConfig =
      previous === undefined
        ? parsed.data
        : {
            ...parsed.data,
            description: parsed.data.description ?? previous.description,
            input_schema: parsed.data.input_schema ?? previous.input_schema,
            sensitivity:
              definition.sensitivity === undefined ? previous.sensitivity : parsed.data.sensitivity,
            required_scopes: union(previous.required_scopes, parsed.data.required_scopes),
            redact: union(previous.redact, parsed.data.redact),
          };
    this.declared.set(definition.name, next);
    try {
      return this.merged(policy, config);
    } catch (e) {
      if (previous === undefined) this.declared.delete(definition.name);
      else this.declared.set(definition.name, previous);
      throw e;
    }
  }

  /**
   * `policy` with the tools declared in code. Where the config declares the same tool, its fields win, except
   * required scopes and redaction paths, which are the union of both (code can only make a tool stricter).
   */
  merged(policy: CompiledPolicy, config: Config): CompiledPolicy {
    if (this.declared.size === 0) return policy;
    const tools = new Map(policy.tools);
    const issues: CompileIssue[] = [];
    for (const [name, code] of this.declared) {
      const fromConfig = configTool(name, config);
      const merged: ToolConfig =
        fromConfig === undefined
          ? code
          : {
              ...code,
              ...fromConfig,
              required_scopes: union(fromConfig.required_scopes, code.required_scopes),
              redact: union(fromConfig.redact, code.redact),
            };
      tools.set(name, compileTool(merged, ["tools", name], issues) satisfies CompiledTool);
    }
    if (issues.length > 0) {
      throw new OnbehalfError("ERR_INVALID_ARGUMENT", issues.map((i) => i.message).join("; "));
    }
    return { ...policy, tools };
  }
}

function configTool(name: string, config: Config): ToolConfig | undefined {
  return config.tools.find((t) => t.name === name);
}

function union(a: readonly string[], b: readonly string[]): string[] {
  return [...new Set([...a, ...b])];
}
