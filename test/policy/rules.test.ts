import { describe, expect, it } from "vitest";
import type { ConfigInput } from "../../src/config/schema.js";
import type { TraceStep } from "../../src/policy/decide.js";
import { compile, decideCall } from "../support/policy.js";
import { principal } from "../support/principal.js";

const alice = principal({ user: "alice", scopes: ["refunds:write"], roles: ["agent"] });

function config(rules: unknown[], extra: Record<string, unknown> = {}): ConfigInput {
  return {
    tools: [{ name: "issue_refund", required_scopes: ["refunds:write"], redact: ["card"] }, { name: "ping" }],
    tenants: [
      { id: "acme", policy: { defaults: { "*": { permission: "allow" } }, rules, ...extra } as never },
    ],
  };
}

describe("rules with CEL conditions", () => {
  const policy = compile(
    config([
      {
        id: "big-refunds-need-approval",
        tools: ["issue_refund"],
        when: "args.amount > 500",
        effect: "ask",
        reason: "refunds over 500 need a manager",
      },
      {
        id: "no-refunds-from-plugins",
        when: "'plugin' in chain",
        effect: "deny",
        reason: "plugins may not refund",
      },
      {
        id: "night",
        tools: ["ping"],
        when: "now.getHours('UTC') >= 0 && user.email.endsWith('@acme.test')",
        effect: "redact",
        redact: ["secret"],
      },
    ]),
  );

  it("asks for approval when the condition over the arguments holds", () => {
    const d = decideCall(policy, { principal: alice, tool: "issue_refund", args: { amount: 900 } });
    expect(d).toMatchObject({
      decision: "ask",
      reason_code: "approval_required",
      rule: "big-refunds-need-approval",
    });
    expect(d.reason).toBe("refunds over 500 need a manager");
  });

  it("allows when the condition does not hold", () => {
    expect(
      decideCall(policy, { principal: alice, tool: "issue_refund", args: { amount: 20 } }),
    ).toMatchObject({
      decision: "allow",
      reason_code: "ok",
    });
  });

  it("lets a matching deny win over an ask and over an allow", () => {
    const d = decideCall(policy, {
      principal: alice,
      tool: "issue_refund",
      args: { amount: 900 },
      chain: ["bot", "plugin"],
      agent: "plugin",
    });
    expect(d).toMatchObject({ decision: "deny", reason_code: "rule_deny", rule: "no-refunds-from-plugins" });
  });

  it("lets a deny rule win even over a user_tools allow", () => {
    const p = compile(
      config([{ id: "never", tools: ["ping"], effect: "deny" }], {
        user_tools: { alice: { ping: { "*": { permission: "allow" } } } },
      }),
    );
    expect(decideCall(p, { principal: alice, tool: "ping" })).toMatchObject({
      decision: "deny",
      rule: "never",
    });
  });

  it("does not turn a permission deny into an ask", () => {
    const p = compile(
      config([{ id: "ask-all", effect: "ask" }], { tools: { ping: { "*": { permission: "deny" } } } }),
    );
    expect(decideCall(p, { principal: alice, tool: "ping" })).toMatchObject({
      decision: "deny",
      reason_code: "permission_deny",
    });
  });

  it("redacts by rule: the post-transform becomes redact with the rule's paths", () => {
    const d = decideCall(policy, { principal: alice, tool: "ping" });
    expect(d).toMatchObject({ decision: "allow", post_transform: "redact", redact: ["secret"] });
  });

  it("denies with reason error when a condition fails to evaluate (fail closed)", () => {
    const d = decideCall(policy, { principal: alice, tool: "issue_refund", args: { total: 900 } });
    expect(d).toMatchObject({ decision: "deny", reason_code: "error", rule: "big-refunds-need-approval" });
    expect(d.reason).toContain("failed to evaluate");
  });

  it("filters rules by tier, user and agent before evaluating them", () => {
    const p = compile(
      config([
        { id: "bg", tiers: ["background"], effect: "deny" },
        { id: "carol", users: ["carol"], effect: "deny" },
        { id: "rogue", agents: ["rogue"], effect: "deny" },
      ]),
    );
    expect(decideCall(p, { principal: alice, tool: "ping" }).decision).toBe("allow");
    expect(decideCall(p, { principal: alice, tool: "ping", tier: "background" }).rule).toBe("bg");
    expect(decideCall(p, { principal: principal({ user: "carol" }), tool: "ping" }).rule).toBe("carol");
    expect(decideCall(p, { principal: alice, tool: "ping", agent: "rogue" }).rule).toBe("rogue");
  });

  it("sees user, tier, tool and tenant in conditions", () => {
    const p = compile(
      config([
        {
          id: "combo",
          when: "'agent' in user.roles && tier == 'interactive' && tool == 'ping' && tenant == 'acme' && user.id == 'alice'",
          effect: "deny",
        },
      ]),
    );
    expect(decideCall(p, { principal: alice, tool: "ping" }).rule).toBe("combo");
    expect(decideCall(p, { principal: alice, tool: "ping", tier: "api" }).decision).toBe("allow");
  });

  it("records the rules it evaluated in the trace", () => {
    const trace: TraceStep[] = [];
    decideCall(policy, { principal: alice, tool: "issue_refund", args: { amount: 900 } }, trace);
    expect(trace.map((s) => s.step)).toEqual([
      "tool",
      "tenant",
      "membership",
      "scopes",
      "permission",
      "rule big-refunds-need-approval",
      "rule no-refunds-from-plugins",
      "result",
    ]);
  });
});

describe("shadow mode", () => {
  const policy = compile({
    tools: [{ name: "t", required_scopes: ["t:use"] }],
    tenants: [
      {
        id: "acme",
        policy: {
          mode: "shadow",
          tools: { t: { "*": { permission: "deny" } } },
          rules: [{ id: "r", effect: "deny" }],
        },
      },
    ],
  });

  it("allows what the policy would deny and reports the unenforced verdict", () => {
    const d = decideCall(policy, { principal: principal({ user: "u", scopes: ["t:use"] }), tool: "t" });
    expect(d.decision).toBe("allow");
    expect(d.mode).toBe("shadow");
    expect(d.shadow).toMatchObject({ decision: "deny", reason_code: "permission_deny" });
  });

  it("keeps output transforms: a shadow tenant still redacts what the policy says to redact", () => {
    const shadowRedact = compile({
      tools: [{ name: "t", redact: ["ssn"] }],
      tenants: [
        {
          id: "acme",
          policy: {
            mode: "shadow",
            tools: { t: { "*": { permission: "deny", post_transform: "redact" } } },
            rules: [{ id: "hide-card", effect: "redact", redact: ["card"] }],
          },
        },
      ],
    });
    const d = decideCall(shadowRedact, { principal: principal({ user: "u" }), tool: "t" });
    expect(d).toMatchObject({ decision: "allow", post_transform: "redact" });
    expect(d.redact).toContain("card");
    expect(d.shadow).toMatchObject({ decision: "deny" });
  });

  it("still enforces the guarantees: scopes are never relaxed by shadow mode", () => {
    const d = decideCall(policy, { principal: principal({ user: "u", scopes: [] }), tool: "t" });
    expect(d).toMatchObject({ decision: "deny", reason_code: "missing_scope" });
  });
});

describe("rules see the whole delegation chain and the effective scopes", () => {
  const policy = compile({
    tools: [{ name: "read" }],
    tenants: [
      {
        id: "acme",
        users: [{ uid: "carol", scopes: ["docs:read"] }],
        policy: {
          defaults: { "*": { permission: "allow" } },
          rules: [
            { id: "no-plugins", agents: ["plugin"], effect: "deny", reason: "plugins may not read" },
            {
              id: "admins-only",
              when: "'docs:admin' in user.scopes",
              effect: "deny",
              reason: "admin sessions blocked",
            },
          ],
        },
      },
    ],
  });

  it("matches a rule's agents against every hop, not only the agent making the call", () => {
    const carol = principal({ user: "carol", scopes: ["docs:read"] });
    const direct = decideCall(policy, { principal: carol, tool: "read", agent: "plugin" });
    expect(direct).toMatchObject({ decision: "deny", rule: "no-plugins" });
    const delegated = decideCall(policy, {
      principal: carol,
      tool: "read",
      agent: "summarizer",
      chain: ["plugin", "summarizer"],
    });
    expect(delegated).toMatchObject({ decision: "deny", rule: "no-plugins" });
    const clean = decideCall(policy, {
      principal: carol,
      tool: "read",
      agent: "summarizer",
      chain: ["summarizer"],
    });
    expect(clean.decision).toBe("allow");
  });

  it("gives CEL the directory-capped scopes, not the token's", () => {
    // The token claims docs:admin, but the directory lists only docs:read for carol.
    const carol = principal({ user: "carol", scopes: ["docs:read", "docs:admin"] });
    expect(decideCall(policy, { principal: carol, tool: "read", chain: ["bot"] }).decision).toBe("allow");
  });
});
