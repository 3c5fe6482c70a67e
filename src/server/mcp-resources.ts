/**
 * `resources/list`, `resources/templates/list` and `resources/read` through the gateway, governed like tools.
 *
 * A resource is decided under its policy name (config/resources.ts): `resource:<uri>` of the `resources:` entry
 * that governs its URI (exact, else the most specific pattern), or `resource:<upstream>` for an undeclared one
 * of an upstream with `expose: all` (its `default_scopes` required); an undeclared one of an upstream with
 * `expose: declared` is neither listed nor readable. A read is decided with `args.uri`, its attempt committed
 * to the audit before the upstream is asked, its JSON text contents redacted with the entry's `redact` paths
 * (what paths cannot reach is withheld), and its outcome audited, all with `source: mcp`.
 *
 * URIs are relayed as the upstreams give them (they are identifiers that tool results and other resources
 * refer to). A read goes to the one upstream that listed that URI, else to the one whose templates match it;
 * a URI that no upstream listed, that no template matches, or that two upstreams claim is refused: never
 * routed by guess.
 */
import type { Server } from "@modelcontextprotocol/sdk/server/index.js";
import {
  ErrorCode,
  ListResourcesRequestSchema,
  ListResourceTemplatesRequestSchema,
  McpError,
  ReadResourceRequestSchema,
  type ReadResourceResult,
  type Resource,
  type ResourceTemplate,
} from "@modelcontextprotocol/sdk/types.js";
import { governingResource, resourcePolicyName } from "../config/resources.js";
import { type RunContext, withContext } from "../context/run.js";
import { callInput } from "../govern/pipeline.js";
import { listable } from "../policy/decide.js";
import { cutContents, ResourceOutput } from "../policy/resource-output.js";
import { hasUnsafeText, unsafeTextMessage } from "../text.js";
import {
  decidedRead,
  type Listings,
  NOT_FOUND,
  type RelayDeps,
  type RequestExtra,
  sightings,
} from "./mcp-listings.js";
import { templatePattern, templateSample } from "./mcp-uri-templates.js";
import type { Upstream } from "./upstreams.js";

/** Longest URI a client may ask for (it is recorded as the call's name). */
const MAX_URI = 2000;

interface Template {
  readonly upstream: Upstream;
  readonly template: ResourceTemplate;
  readonly pattern: RegExp;
}

/** Every upstream's resources and templates, as the gateway routes them. */
interface Catalog {
  /** URI → the one upstream that listed it (a URI two upstreams list is in neither). */
  readonly listed: ReadonlyMap<string, { upstream: Upstream; resource: Resource }>;
  readonly clashes: ReadonlySet<string>;
  readonly templates: readonly Template[];
}

/**
 * The resources relay of one gateway.
 *
 * @example
 * const resources = new ResourceRelay(deps, listings);
 * resources.register(server, requestRun); // in each session
 */
export class ResourceRelay {
  private readonly sighted: ReturnType<typeof sightings>;

  constructor(
    private readonly deps: RelayDeps,
    private readonly listings: Listings,
  ) {
    this.sighted = sightings(deps.ctx);
  }

  /** Answer the resources methods on a session's server (its `resources` capability registered first). */
  register(server: Server, runOf: (extra: RequestExtra) => RunContext): void {
    server.setRequestHandler(ListResourcesRequestSchema, async (_req, extra) => ({
      resources: await this.list(runOf(extra)),
    }));
    server.setRequestHandler(ListResourceTemplatesRequestSchema, async (_req, extra) => ({
      resourceTemplates: await this.listTemplates(runOf(extra)),
    }));
    server.setRequestHandler(ReadResourceRequestSchema, async (req, extra) =>
      this.read(runOf(extra), req.params.uri),
    );
  }

  /** The resources this user may read, across upstreams. */
  async list(run: RunContext): Promise<Resource[]> {
    const catalog = await this.catalog();
    const out: Resource[] = [];
    for (const [uri, { upstream, resource }] of catalog.listed) {
      const name = this.policyName(uri, upstream);
      if (name !== undefined && this.visible(run, name)) out.push(resource);
    }
    return out;
  }

  /** The templates whose URIs this user may read, across upstreams (each as its upstream gives it). */
  async listTemplates(run: RunContext): Promise<ResourceTemplate[]> {
    const catalog = await this.catalog();
    const out: ResourceTemplate[] = [];
    for (const t of catalog.templates) {
      const name = this.policyName(templateSample(t.template.uriTemplate), t.upstream);
      if (name !== undefined && this.visible(run, name)) out.push(t.template);
    }
    return out;
  }

  /** Read a resource for this user: decided, audited, relayed to the upstream that offers it, redacted. */
  async read(run: RunContext, uri: string): Promise<ReadResourceResult> {
    const { ctx } = this.deps;
    if (uri.length > MAX_URI)
      throw new McpError(ErrorCode.InvalidParams, `a URI is at most ${MAX_URI} characters`);
    if (hasUnsafeText(uri))
      throw new McpError(ErrorCode.InvalidParams, `the uri ${unsafeTextMessage("uri")}`);
    const upstream = route(await this.catalog(), uri);
    // Not offered (no upstream, or an undeclared resource): decided under its own URI, which no entry declares,
    // so the attempt is denied and audited like a call of an unknown tool.
    const name =
      (upstream === undefined ? this.declaredName(uri) : this.policyName(uri, upstream)) ??
      resourcePolicyName(uri);
    const attempt = await decidedRead(this.deps, run, name, { uri });
    if (upstream === undefined) {
      ctx.gov.finish(attempt, { status: "error", error: "no upstream lists this resource" });
      throw new McpError(NOT_FOUND, `resource not found: no upstream lists ${uri} or a template of it`);
    }
    let result: ReadResourceResult;
    try {
      result = await withContext(run, () =>
        upstream.request("resources/read", (client, options) => client.readResource({ uri }, options)),
      );
    } catch (e) {
      ctx.gov.finish(attempt, { status: "error", error: (e as Error).message });
      throw new McpError(ErrorCode.InternalError, (e as Error).message);
    }
    const done = ctx.gov.finish(attempt, { status: "ok", output: new ResourceOutput(result) });
    if (done.action === "block")
      throw new McpError(ErrorCode.InvalidRequest, `the contents of ${uri} are withheld by policy`);
    try {
      await ctx.gov.auditLog.acknowledged(done.seq); // the contents go back once the outcome is on record
    } catch (e) {
      throw new McpError(
        ErrorCode.InternalError,
        `the contents of ${uri} are withheld: ${(e as Error).message}`,
      );
    }
    return cutContents(ResourceOutput.resultOf(done.output, result));
  }

  /**
   * Where `completion/complete` for a template's variable goes: the one upstream that listed that template,
   * when this user may see it; undefined otherwise.
   */
  async completionTarget(run: RunContext, uriTemplate: string): Promise<Upstream | undefined> {
    const owners = (await this.catalog()).templates.filter((t) => t.template.uriTemplate === uriTemplate);
    const upstreams = new Set(owners.map((t) => t.upstream));
    const [upstream] = upstreams;
    if (upstreams.size !== 1 || upstream === undefined) return undefined;
    const name = this.policyName(templateSample(uriTemplate), upstream);
    return name !== undefined && this.visible(run, name) ? upstream : undefined;
  }

  /**
   * What a subscription to `uri` needs: the upstream that offers it and the name it is decided under, when
   * this user may read it (as far as a list shows: scopes, membership, permission layers); else undefined.
   */
  async subscribable(
    run: RunContext,
    uri: string,
  ): Promise<{ upstream: Upstream; name: string } | undefined> {
    if (uri.length > MAX_URI || hasUnsafeText(uri)) return undefined;
    const upstream = route(await this.catalog(), uri);
    if (upstream === undefined) return undefined;
    const name = this.policyName(uri, upstream);
    return name !== undefined && this.visible(run, name) ? { upstream, name } : undefined;
  }

  /** Whether this user may still see what is decided under `name` (a subscription's updates). */
  stillVisible(run: RunContext, name: string): boolean {
    return this.visible(run, name);
  }

  /** Whether this user could read under `name` (permission layers and scopes; rules need the URI). */
  private visible(run: RunContext, name: string): boolean {
    const { ctx } = this.deps;
    return listable(ctx.gov.policy, callInput(run, name, {}, 0, ctx.gov.now()));
  }

  /** The name of the `resources:` entry that governs `uri`, if any. */
  private declaredName(uri: string): string | undefined {
    const entry = governingResource(this.deps.ctx.gov.config.resources, uri);
    return entry === undefined ? undefined : resourcePolicyName(entry.uri);
  }

  /** The policy name a URI of `upstream` is decided under; undefined when it is not offered. */
  private policyName(uri: string, upstream: Upstream): string | undefined {
    const declared = this.declaredName(uri);
    if (declared !== undefined) return declared;
    if (upstream.config.expose !== "all") return undefined;
    const name = resourcePolicyName(upstream.name);
    const { gov } = this.deps.ctx;
    if (gov.policy.tools.get(name) === undefined) {
      gov.declare({
        name,
        description: `resources of upstream ${upstream.name} that no resources: entry declares`,
        required_scopes: upstream.config.default_scopes,
      });
    }
    return name;
  }

  private async catalog(): Promise<Catalog> {
    const listed = new Map<string, { upstream: Upstream; resource: Resource }>();
    const clashes = new Set<string>();
    const templates: Template[] = [];
    await Promise.all(
      this.deps.upstreams.map(async (upstream) => {
        const [resources, tmpl] = await Promise.all([
          this.listings.resources(upstream),
          this.listings.templates(upstream),
        ]);
        return { upstream, resources, tmpl };
      }),
    ).then((all) => {
      for (const { upstream, resources, tmpl } of all) {
        for (const resource of resources) {
          if (typeof resource.uri !== "string" || hasUnsafeText(resource.uri)) continue;
          const declared = this.declaredName(resource.uri);
          this.sighted(
            upstream,
            "resource",
            resource.uri,
            declared ?? resourcePolicyName(upstream.config.expose === "all" ? upstream.name : resource.uri),
            declared !== undefined || upstream.config.expose === "all",
          );
          const other = listed.get(resource.uri);
          if (other !== undefined && other.upstream !== upstream) {
            // Two upstreams list one URI: neither is offered, rather than the wrong one getting the read.
            listed.delete(resource.uri);
            clashes.add(resource.uri);
          }
          if (!clashes.has(resource.uri)) listed.set(resource.uri, { upstream, resource });
        }
        for (const template of tmpl) {
          const pattern = templatePattern(template.uriTemplate);
          if (pattern !== undefined) templates.push({ upstream, template, pattern });
        }
      }
    });
    return { listed, clashes, templates };
  }
}

/**
 * The upstream a read of `uri` goes to: the one that listed it, else the one upstream whose templates match
 * it; undefined when none does, or when two upstreams claim it.
 */
function route(catalog: Catalog, uri: string): Upstream | undefined {
  if (catalog.clashes.has(uri)) return undefined;
  const listed = catalog.listed.get(uri);
  if (listed !== undefined) return listed.upstream;
  const owners = new Set(catalog.templates.filter((t) => t.pattern.test(uri)).map((t) => t.upstream));
  return owners.size === 1 ? [...owners][0] : undefined;
}
