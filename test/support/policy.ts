/** Compile inline configs and decide calls against them, for policy tests. */

import type { Tier } from "../../src/config/policy.js";
import type { ConfigInput } from "../../src/config/schema.js";
import type { Decision } from "../../src/decision.js";
import { loadConfigObject } from "../../src/govern/config.js";
import type { Principal } from "../../src/identity/principal.js";
import type { CompiledPolicy } from "../../src/policy/compile.js";
import { type DecisionInput, decide, type TraceStep } from "../../src/policy/decide.js";

export function compile(config: ConfigInput): CompiledPolicy {
  return loadConfigObject(config).policy;
}

export interface Call {
  principal: Principal;
  tool: string;
  tier?: Tier;
  args?: unknown;
  tenant?: string;
  agent?: string;
  chain?: string[];
  scopes?: readonly string[];
  now?: number;
}

export function decideCall(policy: CompiledPolicy, call: Call, trace?: TraceStep[]): Decision {
  const args = call.args ?? {};
  const input: DecisionInput = {
    principal: call.principal,
    tenant: call.tenant,
    agent: call.agent ?? "bot",
    tier: call.tier ?? "interactive",
    chain: call.chain ?? [call.agent ?? "bot"],
    scopes: new Set(call.scopes ?? call.principal.scopes),
    tool: call.tool,
    args,
    argsBytes: JSON.stringify(args).length,
    now: call.now ?? Date.now(),
  };
  return decide(policy, input, trace);
}
