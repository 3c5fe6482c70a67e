/**
 * Helpers the AgentDojo capability examples share: how an application composes the capability sets of its
 * task types. Nothing here knows AgentDojo's ground truth; see README.md for the method.
 */
import type { CapabilitySetInput } from "../../src/config/capabilities.js";

/** A grant: a tool, optionally with a CEL condition over `args` and `task` (the set's data). */
export type Grant = string | { tool: string; when?: string };

/** A capability set whose data values are lists, so that two sets of one run can be merged. */
export interface TaskCapabilities extends CapabilitySetInput {
  tools: Grant[];
  data: Record<string, readonly (string | number | boolean)[]>;
}

/** A set of `tools` with `data`. */
export function capabilities(
  tools: readonly Grant[],
  data: Record<string, readonly (string | number | boolean)[]> = {},
): TaskCapabilities {
  return { tools: [...tools], data: { ...data } };
}

/**
 * One run doing several tasks (AgentDojo's combined tasks, "do 1. then 2."): every grant of each, and each
 * data list merged. A grant of one task may then accept a value the other task named: the run as a whole was
 * asked for both.
 */
export function combine(...sets: readonly TaskCapabilities[]): TaskCapabilities {
  const data: Record<string, (string | number | boolean)[]> = {};
  for (const s of sets) {
    for (const [k, v] of Object.entries(s.data)) data[k] = [...new Set([...(data[k] ?? []), ...v])];
  }
  const seen = new Set<string>();
  const tools: Grant[] = [];
  for (const s of sets) {
    for (const g of s.tools) {
      const key = JSON.stringify(g);
      if (!seen.has(key)) tools.push(g);
      seen.add(key);
    }
  }
  return { tools, data };
}

/** CEL: a list argument absent, null or empty (cc, bcc, participants). */
export function empty(field: string): string {
  return `(!has(args.${field}) || args.${field} == null || size(args.${field}) == 0)`;
}

/** CEL: a text argument with no link in it (`https://…`, `www.…`): the agent composed it and adds none. */
export function noLinks(field: string): string {
  return `!args.${field}.matches('(?i)(https?://|www[.])')`;
}
