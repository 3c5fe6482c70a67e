/**
 * The run context: who the human is and which chain of agents is acting for them. This module owns the one
 * AsyncLocalStorage of onbehalf; nothing else creates one.
 *
 * A context is immutable. `runAs` binds a new one; `delegate` binds a narrower child for the duration of a
 * callback. AsyncLocalStorage carries it through `await`, `Promise.all` fan-out and timers, and two parallel
 * runs never see each other's context.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { type CapabilityLayer, type CapabilitySetInput, capabilityLayer } from "../config/capabilities.js";
import { TIERS, type Tier } from "../config/policy.js";
import { OnbehalfError } from "../errors.js";
import type { Principal } from "../identity/principal.js";
import { narrowScopes } from "../identity/scopes.js";
import { newTraceId } from "./trace.js";

/** One agent in the chain, with the scopes it was limited to (null: it inherited its parent's). */
export interface Hop {
  readonly agent: string;
  readonly tier: Tier;
  readonly scopes: readonly string[] | null;
}

/** What every governed call sees. */
export interface RunContext {
  readonly principal: Principal;
  /** The innermost agent: the one making the call. */
  readonly agent: string;
  readonly tier: Tier;
  /** Agent names, outermost (the agent the human talks to) first. */
  readonly chain: readonly string[];
  readonly hops: readonly Hop[];
  /** The tier of every hop, outermost first: a call is decided under each (see `DecisionInput.tiers`). */
  readonly tiers: readonly Tier[];
  /** The human's scopes intersected with every hop's scopes. Never wider than `principal.scopes`. */
  readonly scopes: ReadonlySet<string>;
  /** The run's trace id (W3C form when onbehalf made it); its delegations keep it. */
  readonly traceId: string;
  /** The tenant the caller says it acts in; checked against the token's tenant when deciding. */
  readonly tenant: string | undefined;
  /**
   * The task's capabilities, one layer per hop that stated some, outermost first: a call must pass every
   * layer (docs/capabilities.md). Empty: the run is limited by policy and scopes alone.
   */
  readonly capabilities: readonly CapabilityLayer[];
  /**
   * Per agent of `chain`, the registered OAuth client that vouched for it (a delegation token's `act`
   * `client_id`s; null: none did); absent when none did.
   */
  readonly clients?: readonly (string | null)[];
}

/** Options of {@link runAs}. */
export interface RunOptions {
  agent: string;
  tier?: Tier;
  /** Default: the active OpenTelemetry span's trace id, else a new one. */
  traceId?: string;
  tenant?: string;
  /** What the run's task may do: the tools it needs, with conditions over their arguments. */
  capabilities?: CapabilitySetInput;
}

/** Options of {@link delegate}. */
export interface DelegateOptions {
  /** Scopes the delegate may use; intersected with the parent's. Omitted: the parent's scopes. */
  scopes?: readonly string[];
  /**
   * The delegate's tier. Defaults to `subagent`. Its calls are decided under this tier and every tier of the
   * chain before it, the strictest outcome winning: another tier can only narrow what the delegate may do.
   */
  tier?: Tier;
  /** The delegate's capabilities: added to the parent's, so a call must pass both (they only narrow). */
  capabilities?: CapabilitySetInput;
}

const storage = new AsyncLocalStorage<RunContext>();

/**
 * Run `fn` acting for `principal` through `options.agent`.
 *
 * @example
 * await runAs(principal, { agent: "support-bot", tier: "interactive" }, () => getCustomer({ id: "c-1" }));
 */
export function runAs<T>(principal: Principal, options: RunOptions, fn: () => T): T {
  const tier = checkTier(options.tier ?? "interactive");
  const agent = checkAgent(options.agent);
  const context: RunContext = {
    principal,
    agent,
    tier,
    chain: [agent],
    hops: [{ agent, tier, scopes: null }],
    tiers: [tier],
    scopes: new Set(principal.scopes),
    traceId: options.traceId ?? newTraceId(),
    tenant: options.tenant,
    capabilities: options.capabilities === undefined ? [] : [checkLayer(agent, options.capabilities)],
  };
  return storage.run(context, fn);
}

/**
 * Run `fn` as a sub-agent of the current run. The chain grows by one hop; scopes only ever narrow.
 * Throws `ERR_NO_IDENTITY` when nothing is bound: a delegation needs a human to act for.
 *
 * @example
 * await delegate("specialist", { scopes: ["email.read"] }, () => readEmail({ mailbox: "a@example.com" }));
 */
export function delegate<T>(agent: string, options: DelegateOptions, fn: () => T): T {
  const parent = currentRun();
  return storage.run(childContext(parent, agent, options), fn);
}

/** The context a delegation to `agent` would bind; exported for remote delegation (token exchange). */
export function childContext(parent: RunContext, agent: string, options: DelegateOptions): RunContext {
  const name = checkAgent(agent);
  const tier = checkTier(options.tier ?? "subagent");
  const requested = options.scopes ?? null;
  const scopes = requested === null ? parent.scopes : new Set(narrowScopes(parent.scopes, requested));
  return {
    principal: parent.principal,
    agent: name,
    tier,
    chain: [...parent.chain, name],
    hops: [...parent.hops, { agent: name, tier, scopes: requested === null ? null : [...requested] }],
    tiers: [...parent.tiers, tier],
    scopes,
    traceId: parent.traceId,
    tenant: parent.tenant,
    capabilities:
      options.capabilities === undefined
        ? parent.capabilities
        : [...parent.capabilities, checkLayer(name, options.capabilities)],
  };
}

/**
 * The bound run context. Throws `ERR_NO_IDENTITY` when nothing is bound.
 *
 * @example
 * const { principal, chain } = currentRun();
 */
export function currentRun(): RunContext {
  const context = storage.getStore();
  if (context === undefined) {
    throw new OnbehalfError(
      "ERR_NO_IDENTITY",
      "no identity is bound to this call: wrap the agent run in gov.runAs(principal, { agent }, fn)",
    );
  }
  return context;
}

/** The bound run context, or undefined. */
export function tryCurrentRun(): RunContext | undefined {
  return storage.getStore();
}

/**
 * The context of a run whose chain is already known (a delegation token's, or a remote agent's single hop):
 * the innermost agent acts, scopes are the given ones (default: the principal's).
 *
 * @example
 * const run = runContextOf(principal, { chain: ["planner", "mailer"], tier: "subagent" });
 */
export function runContextOf(
  principal: Principal,
  options: {
    chain: readonly string[];
    /** The innermost hop's tier. */
    tier: Tier;
    /** Every hop's tier, outermost first (a delegation token's); default: `tier` for each. */
    tiers?: readonly Tier[];
    scopes?: Iterable<string>;
    tenant?: string;
    traceId?: string;
    /** The run's capability layers (a delegation token's, verified). */
    capabilities?: readonly CapabilityLayer[];
    /** Per agent of `chain`, the client that vouched for it (a delegation token's, verified). */
    clients?: readonly (string | null)[];
  },
): RunContext {
  const chain = options.chain.map(checkAgent);
  const agent = chain[chain.length - 1];
  if (agent === undefined) throw new OnbehalfError("ERR_INVALID_ARGUMENT", "a run needs at least one agent");
  const tier = checkTier(options.tier);
  const tiers = options.tiers?.map(checkTier) ?? chain.map(() => tier);
  if (tiers.length !== chain.length || tiers[tiers.length - 1] !== tier) {
    throw new OnbehalfError(
      "ERR_INVALID_ARGUMENT",
      "a run's tiers name one tier per agent of its chain, the last one its own",
    );
  }
  return {
    principal,
    agent,
    tier,
    chain,
    hops: chain.map((a, i) => ({ agent: a, tier: tiers[i]!, scopes: null })),
    tiers,
    // never wider than the principal's, whatever the caller passes
    scopes: new Set(narrowScopes(new Set(principal.scopes), options.scopes)),
    traceId: options.traceId ?? newTraceId(),
    tenant: options.tenant,
    capabilities: options.capabilities ?? [],
    // kept only when some hop was vouched for, and only aligned with the chain
    ...(options.clients !== undefined &&
    options.clients.length === chain.length &&
    options.clients.some((c) => c !== null)
      ? { clients: options.clients }
      : {}),
  };
}

/** Run `fn` with an explicit context (adapters that carry the context themselves use this). */
export function withContext<T>(context: RunContext, fn: () => T): T {
  return storage.run(context, fn);
}

function checkTier(tier: string): Tier {
  if (!(TIERS as readonly string[]).includes(tier)) {
    throw new OnbehalfError("ERR_INVALID_ARGUMENT", `unknown tier "${tier}": use one of ${TIERS.join(", ")}`);
  }
  return tier as Tier;
}

function checkLayer(agent: string, input: CapabilitySetInput): CapabilityLayer {
  const layer = capabilityLayer(agent, input);
  if ("error" in layer) {
    throw new OnbehalfError(
      "ERR_INVALID_ARGUMENT",
      `the capabilities of ${agent} are invalid: ${layer.error}`,
    );
  }
  return layer;
}

function checkAgent(agent: string): string {
  if (typeof agent !== "string" || agent.length === 0 || agent.length > 200) {
    throw new OnbehalfError("ERR_INVALID_ARGUMENT", "an agent needs a name of 1 to 200 characters");
  }
  return agent;
}
