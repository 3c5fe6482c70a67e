/**
 * Shadow replay: decide audited calls again under the policy in force and under a draft, to see which decisions
 * a change would make different before it is saved. A record keeps the human, the agent chain, the tier, the
 * tool and the redacted arguments, not the token: each call is replayed as if its token held the tool's
 * required scopes (none, when the record was denied for a missing scope), under the tier of its innermost hop.
 * Both policies see the same replayed call, so what differs between them is the draft's doing.
 */
import type { Tier } from "../config/policy.js";
import type { ReasonCode, Verdict } from "../decision.js";
import type { CompiledPolicy } from "./compile.js";
import { decide } from "./decide.js";
import { hypotheticalInput } from "./hypothetical.js";

/** What replay needs of an audit record. */
export interface ReplayedCall {
  readonly seq: number;
  readonly log: string;
  readonly time: string;
  readonly tenant: string | null;
  readonly user: string | null;
  readonly email: string | null;
  readonly tier: string | null;
  readonly chain: readonly string[];
  readonly tool: string | null;
  readonly args: unknown;
  readonly decision: Verdict;
  readonly reason_code: ReasonCode;
}

export interface ReplayVerdict {
  readonly decision: Verdict;
  readonly reason_code: ReasonCode;
  readonly reason: string;
  readonly rule: string | null;
}

export interface ReplayChange {
  readonly call: ReplayedCall;
  readonly now: ReplayVerdict;
  readonly draft: ReplayVerdict;
}

export interface ReplayReport {
  /** Calls replayed (records without a user or a tool are skipped). */
  readonly replayed: number;
  readonly changed: readonly ReplayChange[];
  /** Decisions the draft would make, by verdict. */
  readonly draft_totals: Readonly<Record<Verdict, number>>;
  readonly now_totals: Readonly<Record<Verdict, number>>;
}

/**
 * Replay `calls` under `current` and `draft`.
 *
 * @example
 * const { changed } = replay(records, gov.policy, draftPolicy);
 */
export function replay(
  calls: readonly ReplayedCall[],
  current: CompiledPolicy,
  draft: CompiledPolicy,
): ReplayReport {
  const changed: ReplayChange[] = [];
  const nowTotals = { allow: 0, deny: 0, ask: 0 };
  const draftTotals = { allow: 0, deny: 0, ask: 0 };
  let replayed = 0;
  for (const call of calls) {
    if (call.user === null || call.tool === null) continue;
    replayed++;
    const now = verdictOf(current, call, current);
    const next = verdictOf(draft, call, current);
    nowTotals[now.decision]++;
    draftTotals[next.decision]++;
    if (now.decision !== next.decision || now.reason_code !== next.reason_code || now.rule !== next.rule) {
      changed.push({ call, now, draft: next });
    }
  }
  return { replayed, changed, draft_totals: draftTotals, now_totals: nowTotals };
}

function verdictOf(policy: CompiledPolicy, call: ReplayedCall, current: CompiledPolicy): ReplayVerdict {
  // The scopes come from the policy in force for both, so a draft cannot make a replayed token wider.
  const scopes =
    call.reason_code === "missing_scope" ? [] : (current.tools.get(call.tool!)?.requiredScopes ?? []);
  const args = call.args ?? {};
  const input = hypotheticalInput(
    {
      user: call.user!,
      tenant: call.tenant,
      requestedTenant: undefined,
      scopes,
      roles: [],
      email: call.email,
      tool: call.tool!,
      tier: (call.tier ?? "interactive") as Tier,
      chain: call.chain.length > 0 ? call.chain : ["agent"],
      args,
      argsBytes: JSON.stringify(args).length,
      issuer: undefined,
      now: Date.parse(call.time),
    },
    policy,
  );
  const d = decide(policy, input);
  return { decision: d.decision, reason_code: d.reason_code, reason: d.reason, rule: d.rule };
}
