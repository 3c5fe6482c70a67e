/**
 * `prompts/list` and `prompts/get` through the gateway, governed like tools.
 *
 * A prompt is exposed as its upstream's tools are (`<prefix><separator><name>`, e.g. `crm.summarize`) and
 * decided under `prompt:<exposed name>` (config/resources.ts): declared by a `prompts:` entry, or, for an
 * upstream with `expose: all`, declared with its `default_scopes`; an undeclared prompt of an upstream with
 * `expose: declared` is neither listed nor gettable. A get is decided with `args.arguments` (the prompt's
 * arguments) visible to rules, committed to the audit before the upstream is asked, its messages redacted with
 * the entry's `redact` paths, and its outcome audited, all with `source: mcp`.
 */
import type { Server } from "@modelcontextprotocol/sdk/server/index.js";
import {
  ErrorCode,
  GetPromptRequestSchema,
  type GetPromptResult,
  ListPromptsRequestSchema,
  McpError,
  type Prompt,
} from "@modelcontextprotocol/sdk/types.js";
import { promptPolicyName } from "../config/resources.js";
import { type RunContext, withContext } from "../context/run.js";
import { callInput } from "../govern/pipeline.js";
import { listable } from "../policy/decide.js";
import { McpOutput } from "../policy/output.js";
import { hasUnsafeText, unsafeTextMessage } from "../text.js";
import {
  decidedRead,
  type Listings,
  NOT_FOUND,
  type RelayDeps,
  type RequestExtra,
  sightings,
} from "./mcp-listings.js";
import type { Upstream } from "./upstreams.js";

interface ExposedPrompt {
  readonly upstream: Upstream;
  /** The upstream's own name for it. */
  readonly original: string;
  readonly prompt: Prompt;
}

/**
 * The prompts relay of one gateway.
 *
 * @example
 * const prompts = new PromptRelay(deps, listings);
 * prompts.register(server, requestRun); // in each session
 */
export class PromptRelay {
  private readonly sighted: ReturnType<typeof sightings>;

  constructor(
    private readonly deps: RelayDeps,
    private readonly listings: Listings,
  ) {
    this.sighted = sightings(deps.ctx);
  }

  /** Answer the prompts methods on a session's server (its `prompts` capability registered first). */
  register(server: Server, runOf: (extra: RequestExtra) => RunContext): void {
    server.setRequestHandler(ListPromptsRequestSchema, async (_req, extra) => ({
      prompts: await this.list(runOf(extra)),
    }));
    server.setRequestHandler(GetPromptRequestSchema, async (req, extra) =>
      this.get(runOf(extra), req.params.name, req.params.arguments ?? {}),
    );
  }

  /** The prompts this user may get, under their exposed names. */
  async list(run: RunContext): Promise<Prompt[]> {
    const { ctx } = this.deps;
    const out: Prompt[] = [];
    for (const [name, p] of await this.catalog()) {
      if (listable(ctx.gov.policy, callInput(run, promptPolicyName(name), {}, 0, ctx.gov.now()))) {
        out.push({ ...p.prompt, name });
      }
    }
    return out;
  }

  /** Get a prompt for this user: decided with its arguments, audited, relayed, redacted. */
  async get(run: RunContext, name: string, promptArgs: Record<string, string>): Promise<GetPromptResult> {
    const { ctx } = this.deps;
    if (hasUnsafeText(name))
      throw new McpError(ErrorCode.InvalidParams, `the prompt ${unsafeTextMessage("name")}`);
    const prompt = (await this.catalog()).get(name);
    const policyName = promptPolicyName(name);
    const attempt = await decidedRead(this.deps, run, policyName, { arguments: promptArgs });
    if (prompt === undefined) {
      ctx.gov.finish(attempt, { status: "error", error: "no upstream offers this prompt" });
      throw new McpError(NOT_FOUND, `no upstream offers a prompt named ${name}`);
    }
    let result: GetPromptResult;
    try {
      result = await withContext(run, () =>
        prompt.upstream.request("prompts/get", (client, options) =>
          client.getPrompt({ name: prompt.original, arguments: promptArgs }, options),
        ),
      );
    } catch (e) {
      ctx.gov.finish(attempt, { status: "error", error: (e as Error).message });
      throw new McpError(ErrorCode.InternalError, (e as Error).message);
    }
    // The messages' contents are the parts of a tool result (text, images, embedded resources): redacted as one.
    const asResult = new McpOutput({ content: result.messages.map((m) => m.content) });
    const done = ctx.gov.finish(attempt, { status: "ok", output: asResult });
    if (done.action === "block")
      throw new McpError(ErrorCode.InvalidRequest, `the messages of ${name} are withheld by policy`);
    try {
      await ctx.gov.auditLog.acknowledged(done.seq);
    } catch (e) {
      throw new McpError(
        ErrorCode.InternalError,
        `the messages of ${name} are withheld: ${(e as Error).message}`,
      );
    }
    const content = McpOutput.resultOf(done.output, asResult.result).content;
    if (done.output === asResult) return result;
    return {
      ...(result.description === undefined ? {} : { description: result.description }),
      messages: result.messages.map((m, i) => ({ role: m.role, content: content[i] ?? m.content })),
    } as GetPromptResult;
  }

  /**
   * Where `completion/complete` for a prompt's argument goes: the upstream offering the prompt and its own name
   * for it, when this user may see the prompt; undefined otherwise.
   */
  async completionTarget(
    run: RunContext,
    name: string,
  ): Promise<{ upstream: Upstream; name: string } | undefined> {
    const { ctx } = this.deps;
    if (hasUnsafeText(name)) return undefined;
    const p = (await this.catalog()).get(name);
    if (p === undefined) return undefined;
    if (!listable(ctx.gov.policy, callInput(run, promptPolicyName(name), {}, 0, ctx.gov.now())))
      return undefined;
    return { upstream: p.upstream, name: p.original };
  }

  /**
   * The prompts offered, by exposed name: declared ones, and with `expose: all` undeclared ones (declared here
   * with the upstream's `default_scopes`). A name two upstreams offer is offered by neither.
   */
  private async catalog(): Promise<Map<string, ExposedPrompt>> {
    const { gov } = this.deps.ctx;
    const declared = new Set(gov.config.prompts.map((p) => p.name));
    const offered = new Map<string, ExposedPrompt>();
    const clashes = new Set<string>();
    const lists = await Promise.all(
      this.deps.upstreams.map(async (u) => ({ upstream: u, prompts: await this.listings.prompts(u) })),
    );
    for (const { upstream, prompts } of lists) {
      for (const prompt of prompts) {
        if (typeof prompt.name !== "string" || hasUnsafeText(prompt.name)) continue;
        const name = `${upstream.exposedPrefix}${prompt.name}`;
        const isDeclared = declared.has(name);
        this.sighted(
          upstream,
          "prompt",
          name,
          promptPolicyName(name),
          isDeclared || upstream.config.expose === "all",
        );
        if (!isDeclared && upstream.config.expose !== "all") continue;
        const other = offered.get(name);
        if (other !== undefined && other.upstream !== upstream) {
          offered.delete(name);
          clashes.add(name);
        }
        if (clashes.has(name)) continue;
        if (!isDeclared && gov.policy.tools.get(promptPolicyName(name)) === undefined) {
          try {
            gov.declare({
              name: promptPolicyName(name),
              ...(prompt.description === undefined ? {} : { description: prompt.description }),
              required_scopes: upstream.config.default_scopes,
            });
          } catch {
            continue; // a name policy cannot hold is not offered
          }
        }
        offered.set(name, { upstream, original: prompt.name, prompt });
      }
    }
    return offered;
  }
}
