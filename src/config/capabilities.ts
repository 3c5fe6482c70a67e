/**
 * Task-scoped capabilities, as data: the tools a run's task needs, each optionally with a CEL condition over
 * its arguments and the task's data (docs/capabilities.md). A run holds a stack of them, one layer per hop that
 * stated some; a call must pass every layer, so a delegation only ever narrows (its layer is added to its
 * parent's, never put in their place).
 *
 * On the wire (a delegation token, `POST /v1/token`) a layer is an RFC 9396 `authorization_details` entry of
 * the type {@link CAPABILITIES_TYPE}. This module only says what a layer is; `policy/capabilities.ts` compiles
 * and evaluates the conditions.
 */
import { z } from "zod";
import { hasUnsafeText, unsafeTextMessage } from "../text.js";
import { safeText } from "./fields.js";

/** The RFC 9396 `authorization_details` type of a capability set. */
export const CAPABILITIES_TYPE = "urn:onbehalf:capabilities";

/** How large a capability set may be: tools, one condition, the task data (canonical JSON bytes). */
export const CAPABILITY_LIMITS = { tools: 256, condition: 4096, dataBytes: 32_768, layers: 32 } as const;

const Grant = z.union([
  safeText(200),
  z.strictObject({
    /** The tool, as the policy names it (for the MCP gateway: `upstream.tool`). */
    tool: safeText(200),
    /** CEL over `args`, `task` (the set's data) and the call (`user`, `agent`, `tier`, `chain`, `tool`, `now`). */
    when: z
      .string()
      .min(1)
      .max(CAPABILITY_LIMITS.condition)
      .refine((s) => !hasUnsafeText(s), { message: unsafeTextMessage("a condition") })
      .optional(),
  }),
]);

/**
 * A capability set as an application states it (`gov.runAs(p, { agent, capabilities })`): the tools, each a
 * name or `{ tool, when }`, and the task's data that conditions read as `task`. Two grants of one tool are
 * alternatives: either lets the call through.
 *
 * @example
 * const caps: CapabilitySetInput = {
 *   tools: ["get_most_recent_transactions", { tool: "send_money", when: "args.recipient == task.payee" }],
 *   data: { payee: "GB29NWBK60161331926819" },
 * };
 */
export const CapabilitySetInput = z.strictObject({
  tools: z.array(Grant).max(CAPABILITY_LIMITS.tools),
  data: z.record(z.string(), z.unknown()).optional(),
});
export type CapabilitySetInput = z.input<typeof CapabilitySetInput>;

/** One grant of a layer, normalized. */
export interface CapabilityGrant {
  readonly tool: string;
  /** Absent: any arguments. */
  readonly when?: string;
}

/** One layer of a run's capabilities: what one hop (`agent`) was limited to. */
export interface CapabilityLayer {
  /** The agent whose run or delegation stated this layer. */
  readonly agent: string;
  readonly tools: readonly CapabilityGrant[];
  /** What conditions read as `task`: the values the task was given (a payee the user typed, say). */
  readonly data: Readonly<Record<string, unknown>>;
}

/** An `authorization_details` entry of ours, as `POST /v1/token` takes it (the server adds the agent). */
export const CapabilityDetail = CapabilitySetInput.extend({ type: z.literal(CAPABILITIES_TYPE) });

/** A signed entry of a delegation token: one layer, with the agent it was granted to. */
const SignedDetail = CapabilityDetail.extend({ agent: safeText(200) });

/**
 * Validate and normalize an application's capability set into the layer of `agent`; `{ error }` says what is
 * wrong (the caller wraps it in its own error).
 *
 * @example
 * const layer = capabilityLayer("payments-bot", { tools: ["get_balance"] });
 */
export function capabilityLayer(agent: string, input: unknown): CapabilityLayer | { error: string } {
  const parsed = CapabilitySetInput.safeParse(input);
  if (!parsed.success) return { error: issueText(parsed.error) };
  return layerOf(agent, parsed.data);
}

/**
 * The layers of a delegation token's `authorization_details` claim (entries of other types are left to whoever
 * defines them). Returns an error for an entry of ours that is malformed: such a token is refused.
 *
 * @example
 * const layers = layersOfClaim(principal.claims["authorization_details"]);
 */
export function layersOfClaim(claim: unknown): readonly CapabilityLayer[] | { error: string } {
  if (claim === undefined) return [];
  if (!Array.isArray(claim)) return { error: "authorization_details is not an array" };
  const layers: CapabilityLayer[] = [];
  for (const entry of claim) {
    if (
      typeof entry !== "object" ||
      entry === null ||
      (entry as { type?: unknown }).type !== CAPABILITIES_TYPE
    )
      continue;
    const parsed = SignedDetail.safeParse(entry);
    if (!parsed.success) return { error: `a capability entry is malformed: ${issueText(parsed.error)}` };
    const layer = layerOf(parsed.data.agent, parsed.data);
    if ("error" in layer) return layer;
    layers.push(layer);
  }
  if (layers.length > CAPABILITY_LIMITS.layers)
    return { error: `more than ${CAPABILITY_LIMITS.layers} capability layers` };
  return layers;
}

/**
 * The `authorization_details` entries that carry `layers` (outermost first), as signed into a token.
 *
 * @example
 * signJwt(key, { ...claims, authorization_details: detailsOf(run.capabilities) });
 */
export function detailsOf(layers: readonly CapabilityLayer[]): Record<string, unknown>[] {
  return layers.map((l) => ({ type: CAPABILITIES_TYPE, agent: l.agent, tools: l.tools, data: l.data }));
}

function layerOf(
  agent: string,
  input: z.output<typeof CapabilitySetInput>,
): CapabilityLayer | { error: string } {
  const data = input.data ?? {};
  let json: string;
  try {
    json = JSON.stringify(data);
  } catch (e) {
    return { error: `the capability data cannot be encoded as JSON: ${(e as Error).message}` };
  }
  // CEL would read an object with this key as a protobuf message, not as the data it is (as for arguments)
  if (json.includes('"$typeName"')) return { error: 'the capability data uses the reserved key "$typeName"' };
  const bytes = Buffer.byteLength(json);
  if (bytes > CAPABILITY_LIMITS.dataBytes) {
    return {
      error: `the capability data is ${bytes} bytes, over the limit of ${CAPABILITY_LIMITS.dataBytes}`,
    };
  }
  const tools = input.tools.map((g) =>
    typeof g === "string"
      ? { tool: g }
      : g.when === undefined
        ? { tool: g.tool }
        : { tool: g.tool, when: g.when },
  );
  return { agent, tools, data };
}

function issueText(error: z.ZodError): string {
  return error.issues
    .map((i) => `${i.path.length === 0 ? "" : `${i.path.join(".")}: `}${i.message}`)
    .join("; ");
}
