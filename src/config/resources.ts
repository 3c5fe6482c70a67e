/**
 * What the MCP gateway's upstreams offer besides tools: `resources:` and `prompts:`, siblings of `tools:`.
 * Each entry is decided like a tool under a stable policy name (see {@link resourcePolicyName},
 * {@link promptPolicyName}), so tenants' `tools:` entries, `user_tools:`, rules and rate limits apply to them.
 */
import { z } from "zod";
import { nonEmpty, safeText } from "./fields.js";
import { SENSITIVITIES } from "./policy.js";

/**
 * A resource, or a family of them: `uri` is an exposed URI (`crm://customers/42`) or a pattern in which `*`
 * matches any run of characters but `/` and `**` any run at all (`crm://customers/*`).
 */
export const ResourceConfig = z.strictObject({
  uri: safeText(2000).regex(/^[A-Za-z][A-Za-z0-9+.-]*:/, "a resource uri starts with a scheme (crm://…)"),
  description: z.string().optional(),
  required_scopes: z.array(nonEmpty).default([]),
  sensitivity: z.enum(SENSITIVITIES).default("user_data"),
  /** Paths redacted from a read's JSON text contents when post_transform is redact. */
  redact: z.array(nonEmpty).default([]),
  /** What happens to contents the paths cannot reach (not JSON, binary): `withhold` (default) or `pass`. */
  unparsed_output: z.enum(["withhold", "pass"]).default("withhold"),
});
export type ResourceConfig = z.output<typeof ResourceConfig>;

/** A prompt, by its exposed name (`crm.summarize`: the upstream's prefix and separator, then its own name). */
export const PromptConfig = z.strictObject({
  name: safeText(500),
  description: z.string().optional(),
  required_scopes: z.array(nonEmpty).default([]),
  sensitivity: z.enum(SENSITIVITIES).default("user_data"),
  /** Paths redacted from the JSON text of the prompt's messages when post_transform is redact. */
  redact: z.array(nonEmpty).default([]),
  unparsed_output: z.enum(["withhold", "pass"]).default("withhold"),
});
export type PromptConfig = z.output<typeof PromptConfig>;

/**
 * The name the policy decides a resource read under: `resource:` and the entry's `uri` as written
 * (`resource:crm://customers/*`). Undeclared resources of an upstream with `expose: all` are decided under
 * `resource:<upstream name>` (no colon follows, so it is never a declared entry's name).
 *
 * @example
 * resourcePolicyName("crm://customers/*"); // "resource:crm://customers/*"
 */
export function resourcePolicyName(uriOrUpstream: string): string {
  return `resource:${uriOrUpstream}`;
}

/**
 * The name the policy decides a prompt get under: `prompt:` and its exposed name.
 *
 * @example
 * promptPolicyName("crm.summarize"); // "prompt:crm.summarize"
 */
export function promptPolicyName(exposed: string): string {
  return `prompt:${exposed}`;
}

/**
 * Whether `uri` matches a resource entry's pattern: `**` matches anything, `*` anything but `/`, the rest
 * itself.
 *
 * @example
 * uriMatches("crm://customers/*", "crm://customers/42"); // true
 * uriMatches("crm://customers/*", "crm://customers/42/orders"); // false
 */
export function uriMatches(pattern: string, uri: string): boolean {
  if (!pattern.includes("*")) return pattern === uri;
  let cached = patterns.get(pattern);
  if (cached === undefined) {
    const source = pattern
      .split(/(\*\*|\*)/)
      .map((part) =>
        part === "**" ? ".*" : part === "*" ? "[^/]*" : part.replace(/[\\^$.|?+()[\]{}]/g, "\\$&"),
      )
      .join("");
    cached = new RegExp(`^${source}$`, "s");
    if (patterns.size > 1000) patterns.clear();
    patterns.set(pattern, cached);
  }
  return cached.test(uri);
}
const patterns = new Map<string, RegExp>();

/**
 * The entry that governs `uri`: an exact entry, else the matching pattern with the most literal characters
 * (the first declared among equals); undefined when none matches.
 *
 * @example
 * governingResource([{ uri: "crm://**" }, { uri: "crm://customers/*" }], "crm://customers/1"); // the second
 */
export function governingResource<T extends { readonly uri: string }>(
  entries: readonly T[],
  uri: string,
): T | undefined {
  let best: T | undefined;
  let bestScore = -1;
  for (const e of entries) {
    if (!uriMatches(e.uri, uri)) continue;
    const score = e.uri.includes("*") ? e.uri.replace(/\*/g, "").length : Number.MAX_SAFE_INTEGER;
    if (score > bestScore) {
      best = e;
      bestScore = score;
    }
  }
  return best;
}
