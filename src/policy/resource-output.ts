/**
 * What the model sees of a `resources/read`, and how it is redacted and bounded (the resources counterpart of
 * `McpOutput` in output.ts).
 */
import type { ReadResourceResult } from "@modelcontextprotocol/sdk/types.js";
import { type OutputRedaction, redactOutput, ShapedOutput, withheldNotice } from "./output.js";
import { redact } from "./redact.js";

/** Largest read handed back to a client (as for tool results); contents past it are dropped with a note. */
export const MAX_CONTENTS_BYTES = 1_048_576;

/**
 * A `resources/read` result as the model sees it: each content's JSON text redacted by path; text that is not
 * JSON and binary contents withheld (or passed, with `unparsed_output: pass`), as for tool output.
 *
 * @example
 * const done = gov.finish(attempt, { status: "ok", output: new ResourceOutput(result) });
 * return ResourceOutput.resultOf(done.output, result);
 */
export class ResourceOutput extends ShapedOutput {
  constructor(readonly result: ReadResourceResult) {
    super();
  }

  /** The result a (possibly redacted) output stands for; `fallback` when it is not a `ResourceOutput`. */
  static resultOf(output: unknown, fallback: ReadResourceResult): ReadResourceResult {
    return output instanceof ResourceOutput ? output.result : fallback;
  }

  redacted(redaction: OutputRedaction): ResourceOutput {
    if (redaction.paths.length === 0) return this;
    const before = this.result.contents;
    const contents = before.map((c): ReadResourceResult["contents"][number] => {
      const meta = c._meta === undefined ? undefined : redact(c._meta, redaction.paths);
      const withMeta = <T extends object>(x: T) => (meta === c._meta ? x : { ...x, _meta: meta });
      if ("text" in c && typeof c.text === "string") {
        const text = redactOutput(c.text, redaction) as string;
        if (text === c.text) return withMeta(c);
        const withheld = text.startsWith("[withheld by onbehalf:");
        return withMeta({ ...c, text, ...(withheld ? { mimeType: "text/plain" } : {}) });
      }
      if (redaction.unparsed === "pass") return withMeta(c);
      redaction.withheld?.push(`a binary resource (${c.mimeType ?? "no type"})`);
      const text = withheldNotice(redaction.tool, `a binary resource (${c.mimeType ?? "no type"})`);
      return { uri: c.uri, mimeType: "text/plain", text };
    });
    const meta = this.result._meta === undefined ? undefined : redact(this.result._meta, redaction.paths);
    if (contents.every((c, i) => c === before[i]) && meta === this.result._meta) return this;
    return new ResourceOutput({ contents, ...(meta === undefined ? {} : { _meta: meta }) });
  }
}

/**
 * A read over {@link MAX_CONTENTS_BYTES}: the contents that fit are kept whole (a JSON text cut in half would
 * not parse), the rest replaced by one text content saying how much was dropped.
 *
 * @example
 * return cutContents(ResourceOutput.resultOf(done.output, result));
 */
export function cutContents(result: ReadResourceResult): ReadResourceResult {
  let budget = MAX_CONTENTS_BYTES;
  let dropped = 0;
  const kept: ReadResourceResult["contents"] = [];
  for (const c of result.contents) {
    const size = Buffer.byteLength("text" in c ? c.text : c.blob);
    if (size <= budget) {
      budget -= size;
      kept.push(c);
    } else {
      dropped += size;
      budget = 0;
    }
  }
  if (dropped === 0) return result;
  const uri = result.contents[0]?.uri ?? "";
  return {
    ...result,
    contents: [
      ...kept,
      {
        uri,
        mimeType: "text/plain",
        text: `[onbehalf: contents cut, ${dropped} bytes over the ${MAX_CONTENTS_BYTES}-byte limit]`,
      },
    ],
  };
}
