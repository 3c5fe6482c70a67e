/**
 * MCP servers built with the official SDK (`@modelcontextprotocol/sdk`): a token verifier for the SDK's
 * `requireBearerAuth` middleware backed by `gov.verify` (the principal goes into `authInfo.extra`), and a
 * wrapper for `registerTool` handlers that governs each call as that human. A refused call is an
 * `isError: true` tool result the model reads. No principal on the request: denied, never run.
 */
import { InvalidTokenError } from "@modelcontextprotocol/sdk/server/auth/errors.js";
import type { OAuthTokenVerifier } from "@modelcontextprotocol/sdk/server/auth/provider.js";
import type { AuthInfo } from "@modelcontextprotocol/sdk/server/auth/types.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import type { Tier } from "../config/policy.js";
import { delegationOf } from "../context/delegation.js";
import { type RunContext, runContextOf, withContext } from "../context/run.js";
import { isOnbehalfError } from "../errors.js";
import type { Governor } from "../govern/governor.js";
import type { Principal } from "../identity/principal.js";
import { McpOutput, mcpText } from "../policy/output.js";
import {
  type AdapterOptions,
  type CallOptions,
  declareTool,
  governCall,
  type ResultShape,
  type ToolPolicy,
} from "./common.js";

export type { OnDeny } from "./common.js";

/**
 * Options of {@link governedHandler}.
 *
 * @example
 * governedHandler(gov, "read_email", readEmail, { agent: "mail-bot", tier: "interactive" });
 */
export interface GovernedHandlerOptions extends AdapterOptions {
  /** The acting agent when the token names no chain. Default: the token's client id. */
  readonly agent?: string;
  /** Default `interactive`. */
  readonly tier?: Tier;
  readonly policy?: ToolPolicy;
}

/**
 * A verifier for `requireBearerAuth`: `gov.verify` checks the token; the principal lands in
 * `authInfo.extra.principal`. A rejected token is the SDK's `InvalidTokenError` (401).
 *
 * @example
 * app.post("/mcp", requireBearerAuth({ verifier: onbehalfVerifier(gov) }), handleMcp);
 */
export function onbehalfVerifier(gov: Governor): OAuthTokenVerifier {
  return {
    async verifyAccessToken(token: string): Promise<AuthInfo> {
      let principal: Principal;
      try {
        principal = await gov.verify(token);
      } catch (e) {
        if (isOnbehalfError(e) && e.status === 401) throw new InvalidTokenError(e.message);
        throw e;
      }
      const client = principal.claims["azp"] ?? principal.claims["client_id"];
      return {
        token,
        clientId: typeof client === "string" ? client : "mcp-client",
        scopes: [...principal.scopes],
        expiresAt: principal.exp,
        extra: { principal },
      };
    },
  };
}

/**
 * Govern a `registerTool` handler: the call acts for the principal in `extra.authInfo`, is decided, run
 * (with that run bound, so governed code inside sees it), redacted and audited with `source: mcp`.
 *
 * @example
 * server.registerTool("get_customer", { inputSchema: { id: z.string() } },
 *   governedHandler(gov, "get_customer", async ({ id }) => ({ content: [{ type: "text", text: await lookup(id) }] })));
 */
export function governedHandler<H extends (...params: never[]) => CallToolResult | Promise<CallToolResult>>(
  gov: Governor,
  name: string,
  handler: H,
  options: GovernedHandlerOptions = {},
): H {
  declareTool(gov, name, options.policy);
  const callOptions: CallOptions<undefined> = {
    ...options,
    ...resultShape,
    begin: { source: "mcp" },
    asError: (text): CallToolResult => ({ content: [{ type: "text", text }], isError: true }),
  };
  /** Runs by principal: a token the verifier has cached yields the same principal, hence the same run. */
  const runs = new WeakMap<Principal, RunContext | undefined>();
  const governed = (...params: never[]) => {
    const auth = (params.at(-1) as { authInfo?: AuthInfo } | undefined)?.authInfo;
    const principal = auth?.extra?.["principal"] as Principal | undefined;
    let run = typeof principal === "object" && principal !== null ? runs.get(principal) : undefined;
    if (run === undefined && principal !== undefined) {
      run = runInAuth(principal, auth, options);
      if (run !== undefined) runs.set(principal, run);
    }
    const args = params.length > 1 ? params[0] : {};
    return governCall(
      gov,
      run,
      name,
      args,
      () => withContext(run!, () => handler(...params)),
      callOptions,
      undefined,
    );
  };
  return governed as unknown as H;
}

/**
 * An MCP tool result: `isError` is a failure; the policy redacts every part the model sees (each text part and
 * embedded resource, `structuredContent`) and withholds what it cannot check (see policy/output.ts).
 */
const resultShape: ResultShape = {
  failed: (r) => ((r as CallToolResult).isError === true ? mcpText(r as CallToolResult) : undefined),
  view: (r) => new McpOutput(r as CallToolResult),
  redacted: (r, output) => McpOutput.resultOf(output, r as CallToolResult),
};

/** The run of an MCP request: its principal, and the chain a delegation token names (else one agent). */
function runInAuth(
  principal: Principal,
  auth: AuthInfo | undefined,
  options: GovernedHandlerOptions,
): RunContext | undefined {
  if (typeof principal?.user !== "string" || !Array.isArray(principal.scopes)) return undefined;
  try {
    const delegated = principal.claims["act"] !== undefined && principal.claims["tier"] !== undefined;
    if (delegated) {
      const { chain, tier, tiers, traceId, capabilities } = delegationOf(principal);
      return runContextOf(principal, {
        chain,
        tier,
        tiers,
        capabilities,
        ...(traceId === null ? {} : { traceId }),
      });
    }
    const chain = [options.agent ?? auth?.clientId ?? "mcp-client"];
    return runContextOf(principal, { chain, tier: options.tier ?? "interactive" });
  } catch {
    return undefined; // a malformed chain: no identity, denied
  }
}
