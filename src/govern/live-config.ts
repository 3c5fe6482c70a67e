/**
 * Live reconfiguration: tenants, tools and limits change while calls are decided (the admin API, another
 * instance's change shared through Redis). Every change is validated like the config file and applies from
 * the next call; a change that does not validate leaves the configuration in force as it was.
 */
import type { Config } from "../config/schema.js";
import { OnbehalfError } from "../errors.js";
import type { CompiledPolicy } from "../policy/compile.js";
import { type LoadedConfig, loadConfigObject } from "./config.js";
import { type ToolDeclaration, ToolRegistry } from "./tools.js";

/** The configuration in force, and the policy it compiles to with the tools declared in code. */
export class LiveConfig {
  private loaded: LoadedConfig;
  private compiled: CompiledPolicy;
  private readonly tools: ToolRegistry;
  private readonly listeners = new Set<() => void>();

  constructor(loaded: LoadedConfig, warn: (message: string) => void) {
    this.loaded = loaded;
    this.compiled = loaded.policy;
    this.tools = new ToolRegistry(warn);
  }

  get config(): Config {
    return this.loaded.config;
  }

  /** The compiled policy in force, tools declared in code included. */
  get policy(): CompiledPolicy {
    return this.compiled;
  }

  /** Call `listener` after each change of the policy in force; returns what stops it. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  /** Declare a tool in code (see tools.ts). */
  declare(definition: ToolDeclaration): void {
    this.compiled = this.tools.declare(definition, this.loaded.policy, this.config);
    this.changed();
  }

  /** The tenants and tools in force, as JSON, for sharing admin changes between instances. */
  snapshot(): string {
    return JSON.stringify({ tenants: this.config.tenants, tools: this.config.tools });
  }

  /** Apply tenants and tools shared by another instance (validated like the file). */
  applySnapshot(snapshot: string): void {
    const { tenants, tools } = JSON.parse(snapshot) as { tenants: unknown; tools: unknown };
    this.replace({ ...this.config, tenants, tools });
  }

  replaceTenant(tenant: unknown): void {
    const id = (tenant as { id?: unknown } | null)?.id;
    if (typeof id !== "string") throw new OnbehalfError("ERR_INVALID_ARGUMENT", "a tenant needs an id");
    const tenants = this.config.tenants.filter((t) => t.id !== id);
    this.replace({ ...this.config, tenants: [...tenants, tenant] });
  }

  patchTenantPolicy(id: string, patch: unknown): void {
    const tenant = this.config.tenants.find((t) => t.id === id);
    if (tenant === undefined) throw new OnbehalfError("ERR_INVALID_ARGUMENT", `no tenant "${id}"`);
    this.replaceTenant({ ...tenant, policy: mergePatch(tenant.policy, patch) });
  }

  deleteTenant(id: string): boolean {
    const tenants = this.config.tenants.filter((t) => t.id !== id);
    if (tenants.length === this.config.tenants.length) return false;
    this.replace({ ...this.config, tenants });
    return true;
  }

  putTool(tool: unknown): void {
    const name = (tool as { name?: unknown } | null)?.name;
    if (typeof name !== "string") throw new OnbehalfError("ERR_INVALID_ARGUMENT", "a tool needs a name");
    this.replace({ ...this.config, tools: [...this.config.tools.filter((t) => t.name !== name), tool] });
  }

  /** Validate a whole new config (tools, tenants and limits apply live; issuers and stores do not). */
  private replace(raw: unknown): void {
    const loaded = loadConfigObject(raw, this.loaded.baseDir);
    const compiled = this.tools.merged(loaded.policy, loaded.config);
    this.loaded = loaded;
    this.compiled = compiled;
    this.changed();
  }

  private changed(): void {
    for (const listener of this.listeners) {
      try {
        listener();
      } catch {
        // a listener's failure is its own: the change has applied
      }
    }
  }
}

/** RFC 7396 JSON merge patch: objects merge recursively, null deletes, anything else replaces. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== "object" || Array.isArray(patch)) return patch;
  const out: Record<string, unknown> =
    target !== null && typeof target === "object" && !Array.isArray(target) ? { ...(target as object) } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete out[key];
    else
      Object.defineProperty(out, key, {
        value: mergePatch(out[key], value),
        enumerable: true,
        writable: true,
        configurable: true,
      });
  }
  return out;
}
