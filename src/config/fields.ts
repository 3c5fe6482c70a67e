/** Field schemas every part of the configuration shares. */
import { z } from "zod";
import { hasUnsafeText, unsafeTextMessage } from "../text.js";

/** A string that is not empty. */
export const nonEmpty = z.string().min(1);

/**
 * Text that names something (a tenant, a user, an agent, a tool, a trace): at most `max` characters, and no
 * control characters or unpaired surrogates, which no audit store, header or terminal can carry safely.
 */
export function safeText(max = 200) {
  return z
    .string()
    .min(1)
    .max(max)
    .refine((s) => !hasUnsafeText(s), { message: unsafeTextMessage("this value") });
}
/**
 * A tool call's arguments: an object, as MCP's `arguments` and every tool's JSON Schema (`type: object`) say. A
 * string, list or number would reach a policy written for named arguments and match none of its paths.
 */
export const ToolArgs = z.record(z.string(), z.unknown(), {
  error: 'args must be a JSON object of named arguments, for example {"id": "c-1"}',
});

/** An identifier in the config: a tenant id, a user id, a rule id. */
export const Identifier = safeText(500);

/** The four tiers a call can run in. */
export const TIERS = ["interactive", "subagent", "background", "api"] as const;
export type Tier = (typeof TIERS)[number];
export const Tier = z.enum(TIERS);
