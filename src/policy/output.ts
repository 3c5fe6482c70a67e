/**
 * What the model sees of a tool's output, and how it is redacted. Redaction fails closed: every place an output
 * can carry a field is redacted, and what redaction paths cannot reach is withheld.
 *
 * - An object or array is redacted by path ({@link redact}): the common case, and as fast as it ever was.
 * - A string is text the model reads: JSON in it is parsed, redacted and serialized again (a string stays a
 *   string); a JSON number, boolean or null carries no field and passes.
 * - Text that is not JSON, and binary data (a Buffer, an image, a blob resource), cannot be checked for fields:
 *   it is withheld, replaced by a notice the model can read, unless the tool says `unparsed_output: pass`.
 * - An output made of parts ({@link ShapedOutput}, e.g. an MCP result: its content parts, embedded resources
 *   and `structuredContent`) is redacted part by part, each as above.
 *
 * Numbers, booleans, null and undefined carry no field and always pass. The input is never mutated; what nothing
 * touched is returned as is (the same reference), so callers can tell `pass` from `redact`.
 */
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import type { ToolConfig } from "../config/policy.js";
import { type RedactPath, redact } from "./redact.js";

/** What happens to output redaction paths cannot reach: `withhold` (the default) or `pass`. */
export type UnparsedOutput = ToolConfig["unparsed_output"];

/**
 * How one call's output is redacted.
 *
 * @example
 * const r: OutputRedaction = { tool: "get_customer", paths: [compiled("ssn")], unparsed: "withhold", withheld: [] };
 */
export interface OutputRedaction {
  /** The tool, named in the notice that replaces withheld output. */
  readonly tool: string;
  /** The paths in force; with none, nothing is redacted or withheld. */
  readonly paths: readonly RedactPath[];
  readonly unparsed: UnparsedOutput;
  /** When given, receives what was withheld ("plain text", "an image"…), for the audit. */
  readonly withheld?: string[];
}

/**
 * An output made of parts the model sees separately (an MCP result, a message with content blocks), built in
 * code by an adapter so that the pipeline redacts each part. Never the result of parsing JSON, so a tool or a
 * reported result cannot pose as one.
 */
export abstract class ShapedOutput {
  /** This output with every part redacted as {@link redactOutput} says; `this` when nothing changed. */
  abstract redacted(redaction: OutputRedaction): ShapedOutput;
}

/** The text that replaces withheld output: it starts with `[withheld by onbehalf:`. */
export function withheldNotice(tool: string, what: string): string {
  return `[withheld by onbehalf: ${what} from ${tool}, which cannot be checked for the fields policy redacts]`;
}

/**
 * Redact a tool's output for the model. Returns `output` itself when nothing was redacted or withheld.
 *
 * @example
 * redactOutput('{"ssn":"078-05-1120"}', r);  // '{"ssn":"[REDACTED]"}'
 * redactOutput("SSN 078-05-1120", r);         // "[withheld by onbehalf: plain text from get_customer, …]"
 */
export function redactOutput(output: unknown, redaction: OutputRedaction): unknown {
  if (redaction.paths.length === 0) return output;
  if (typeof output === "object" && output !== null) {
    if (output instanceof ShapedOutput) return output.redacted(redaction);
    if (ArrayBuffer.isView(output) || output instanceof ArrayBuffer)
      return unparsed(output, "binary data", redaction);
    // A list is parts the model reads one by one (several text parts of a result, content blocks): each is
    // redacted as an output of its own, so prose beside JSON is withheld like prose alone.
    if (Array.isArray(output)) return redactParts(output, redaction);
    return redact(output, redaction.paths);
  }
  if (typeof output === "string") {
    const out = redactText(output, redaction.paths);
    return out === UNPARSED ? unparsed(output, "plain text", redaction) : out;
  }
  return output;
}

function redactParts(parts: readonly unknown[], redaction: OutputRedaction): unknown {
  let copy: unknown[] | undefined;
  parts.forEach((part, i) => {
    const next = redactOutput(part, redaction);
    if (next !== part) {
      copy ??= parts.slice();
      copy[i] = next;
    }
  });
  return copy ?? parts;
}

/** {@link redactText}'s answer for text that is not JSON. */
const UNPARSED = Symbol("unparsed");
/** Characters a JSON text may start with (after whitespace). */
const JSON_START = /^\s*[{["\d-]|^\s*(?:true|false|null)\s*$/;

/** JSON text redacted and serialized again (the same string when nothing changed), or UNPARSED. */
function redactText(text: string, paths: readonly RedactPath[]): string | typeof UNPARSED {
  if (!/\S/.test(text)) return text; // nothing at all
  if (!JSON_START.test(text)) return UNPARSED;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return UNPARSED;
  }
  if (typeof parsed === "string") {
    // JSON text that is a string: text once more (a double-encoded object, or plain text in quotes).
    const inner = redactText(parsed, paths);
    if (inner === UNPARSED) return UNPARSED;
    return inner === parsed ? text : JSON.stringify(inner);
  }
  if (typeof parsed !== "object" || parsed === null) return text;
  const out = redact(parsed, paths);
  return out === parsed ? text : JSON.stringify(out);
}

function unparsed<T>(output: T, what: string, redaction: OutputRedaction): T | string {
  if (redaction.unparsed === "pass") return output;
  redaction.withheld?.push(what);
  return withheldNotice(redaction.tool, what);
}

// -- MCP ----------------------------------------------------------------------------------------------------

type Content = CallToolResult["content"][number];
const RESULT_KEYS = new Set(["content", "structuredContent", "isError", "_meta"]);

/**
 * An MCP tool result as the model sees it: each content part (text, embedded resources, images, audio, links),
 * `structuredContent` and `_meta`. Text and text resources that are JSON are redacted by path, one part at a
 * time; any other part is withheld (or passed, with `unparsed_output: pass`); keys MCP does not define are
 * dropped once anything is redacted.
 *
 * @example
 * const done = gov.finish(attempt, { status: "ok", output: new McpOutput(result) });
 * return McpOutput.resultOf(done.output, result);
 */
export class McpOutput extends ShapedOutput {
  constructor(readonly result: CallToolResult) {
    super();
  }

  /** The MCP result a (possibly redacted) output stands for; `fallback` when it is not an `McpOutput`. */
  static resultOf(output: unknown, fallback: CallToolResult): CallToolResult {
    return output instanceof McpOutput ? output.result : fallback;
  }

  redacted(redaction: OutputRedaction): McpOutput {
    const r = this.result;
    const before = r.content ?? [];
    const content = before.map((c) => redactContent(c, redaction));
    const structured =
      r.structuredContent === undefined ? undefined : redact(r.structuredContent, redaction.paths);
    const meta = r._meta === undefined ? undefined : redact(r._meta, redaction.paths);
    const same =
      content.every((c, i) => c === before[i]) &&
      structured === r.structuredContent &&
      meta === r._meta &&
      Object.keys(r).every((k) => RESULT_KEYS.has(k));
    if (same) return this;
    return new McpOutput({
      content,
      ...(structured === undefined ? {} : { structuredContent: structured }),
      ...(r.isError === undefined ? {} : { isError: r.isError }),
      ...(meta === undefined ? {} : { _meta: meta }),
    });
  }
}

/**
 * The text of an MCP result's text parts, joined (what an error result says).
 *
 * @example
 * mcpText({ content: [{ type: "text", text: "not found" }], isError: true }); // "not found"
 */
export function mcpText(result: CallToolResult): string {
  return (result.content ?? []).map((c) => (c.type === "text" ? c.text : "")).join("");
}

function redactContent(c: Content, redaction: OutputRedaction): Content {
  // A part's own metadata is shown too: redacted by the same paths.
  const meta = c._meta === undefined ? undefined : redact(c._meta, redaction.paths);
  const part = redactPart(c, redaction);
  return meta === c._meta || part.type !== c.type ? part : { ...part, _meta: meta };
}

function redactPart(c: Content, redaction: OutputRedaction): Content {
  switch (c.type) {
    case "text": {
      const text = redactText(c.text, redaction.paths);
      if (text === UNPARSED) return withheldPart(c, "plain text", redaction);
      return text === c.text ? c : { ...c, text };
    }
    case "resource": {
      const resource = c.resource;
      const kind = `an embedded resource (${resource.mimeType ?? "no type"})`;
      if (!("text" in resource) || typeof resource.text !== "string") {
        return withheldPart(c, `${kind} of binary data`, redaction);
      }
      const text = redactText(resource.text, redaction.paths);
      if (text === UNPARSED) return withheldPart(c, `${kind} that is not JSON`, redaction);
      return text === resource.text ? c : { ...c, resource: { ...resource, text } };
    }
    case "image":
      return withheldPart(c, `an image (${c.mimeType})`, redaction);
    case "audio":
      return withheldPart(c, `audio (${c.mimeType})`, redaction);
    case "resource_link":
      return withheldPart(c, "a resource link", redaction);
    default:
      return withheldPart(c, "content of an unknown type", redaction);
  }
}

function withheldPart(c: Content, what: string, redaction: OutputRedaction): Content {
  const out = unparsed(c, what, redaction);
  return out === c ? c : { type: "text", text: out as string };
}
