/** A scripted AI SDK language model (the SDK's own `MockLanguageModelV3`), for the AI SDK and Mastra tests. */
import { MockLanguageModelV3 } from "ai/test";

/** One model turn: call these tools, or answer with text. */
export type Turn = { readonly tools: readonly [name: string, args: Record<string, unknown>][] } | string;

const usage = {
  inputTokens: { total: 1, noCache: 1, cacheRead: 0, cacheWrite: 0 },
  outputTokens: { total: 1, text: 1, reasoning: 0 },
};

let ids = 0;

/** A model that plays `turns` in order (then answers "done"), and what it was shown of tool results. */
export function scriptedModel(turns: readonly Turn[]): { model: MockLanguageModelV3; shown: () => string[] } {
  let i = 0;
  const model = new MockLanguageModelV3({
    doGenerate: async () => {
      const turn = turns[i++] ?? "done";
      if (typeof turn === "string") {
        return {
          content: [{ type: "text", text: turn }],
          finishReason: { unified: "stop", raw: undefined },
          usage,
          warnings: [],
        };
      }
      return {
        content: turn.tools.map(([toolName, args]) => ({
          type: "tool-call" as const,
          toolCallId: `call-${++ids}`,
          toolName,
          input: JSON.stringify(args),
        })),
        finishReason: { unified: "tool-calls", raw: undefined },
        usage,
        warnings: [],
      };
    },
  });
  const shown = (): string[] => {
    const prompt = model.doGenerateCalls.at(-1)?.prompt ?? [];
    return prompt.flatMap((m) =>
      m.role === "tool"
        ? m.content.flatMap((p) =>
            p.type === "tool-result" ? [text((p.output as { value?: unknown }).value)] : [],
          )
        : [],
    );
  };
  return { model, shown };
}

function text(value: unknown): string {
  return typeof value === "string" ? value : JSON.stringify(value);
}
