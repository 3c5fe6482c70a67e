/**
 * Who can do what in one tenant: every user × tool × tier decided by the same `decide()` as the hot path (as
 * far as the permission layers: a call without real arguments), with the reason and the cell that decided,
 * and the rules that could still ask, deny or redact depending on the arguments.
 */
import { TIERS, type Tier } from "../config/policy.js";
import type { ReasonCode, Verdict } from "../decision.js";
import type { CompiledPolicy } from "./compile.js";
import { explain } from "./explain.js";
import { hypotheticalInput } from "./hypothetical.js";

export interface MatrixCell {
  readonly user: string;
  readonly tool: string;
  readonly tier: Tier;
  readonly decision: Verdict;
  readonly reason_code: ReasonCode;
  readonly reason: string;
  /** The permission layer cell that decided, e.g. `tools.grant_permission.*`. */
  readonly layer: string | null;
  /** Rules of the tenant that apply to this user, tool and tier, decided by the call's arguments. */
  readonly rules: readonly { readonly id: string; readonly effect: string; readonly when: string }[];
}

export interface Matrix {
  readonly tenant: string;
  readonly users: readonly { readonly user: string; readonly scopes: "directory" | "tool" }[];
  readonly tools: readonly string[];
  readonly tiers: readonly Tier[];
  readonly cells: readonly MatrixCell[];
}

/**
 * The matrix of `tenant` for `users`. A user listed in the tenant's directory with scopes is decided with those
 * (the cap a token cannot exceed); any other user as if their token held each tool's required scopes.
 *
 * @example
 * accessMatrix(policy, "acme", ["alice", "bob"]).cells.filter((c) => c.decision !== "deny");
 */
export function accessMatrix(
  policy: CompiledPolicy,
  tenant: string,
  users: readonly string[],
  now: number = Date.now(),
): Matrix {
  const t = policy.tenants.get(tenant);
  const tools = [...policy.tools.keys()].sort();
  const cells: MatrixCell[] = [];
  const shown: Matrix["users"][number][] = [];
  for (const user of users) {
    const listed = t?.directory.get(user)?.scopes;
    shown.push({ user, scopes: listed === undefined ? "tool" : "directory" });
    for (const tool of tools) {
      const scopes = listed ?? policy.tools.get(tool)?.requiredScopes ?? [];
      for (const tier of TIERS) {
        const input = hypotheticalInput(
          {
            user,
            tenant,
            requestedTenant: undefined,
            scopes,
            roles: [],
            email: null,
            tool,
            tier,
            chain: ["agent"],
            args: {},
            argsBytes: 2,
            issuer: undefined,
            now,
            listing: true,
          },
          policy,
        );
        const { decision: d } = explain(policy, input);
        const rules = (t?.rules ?? [])
          .filter(
            (r) =>
              (r.tools === null || r.tools.has(tool)) &&
              (r.tiers === null || r.tiers.has(tier)) &&
              (r.users === null || r.users.has(user)),
          )
          .map((r) => ({ id: r.id, effect: r.effect, when: r.when }));
        cells.push({
          user,
          tool,
          tier,
          decision: d.decision,
          reason_code: d.reason_code,
          reason: d.reason,
          layer: d.layer,
          rules: d.decision === "deny" ? [] : rules,
        });
      }
    }
  }
  return { tenant, users: shown, tools, tiers: [...TIERS], cells };
}
