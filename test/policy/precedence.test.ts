import { describe, expect, it } from "vitest";
import type { PolicyConfig } from "../../src/config/policy.js";
import type { ConfigInput } from "../../src/config/schema.js";
import { compile, decideCall } from "../support/policy.js";
import { principal } from "../support/principal.js";

const bob = principal({ user: "bob", scopes: ["t:use"] });

/** A tenant "acme" with one tool "t" (scope t:use) and the given policy. */
function withPolicy(policy: Partial<Record<keyof PolicyConfig, unknown>>): ConfigInput {
  return {
    tools: [{ name: "t", required_scopes: ["t:use"] }, { name: "other" }],
    tenants: [{ id: "acme", policy: policy as never }],
  };
}

function verdict(
  policy: Partial<Record<keyof PolicyConfig, unknown>>,
  tier: "interactive" | "background" = "interactive",
) {
  const d = decideCall(compile(withPolicy(policy)), { principal: bob, tool: "t", tier });
  return { decision: d.decision, reason_code: d.reason_code, layer: d.layer };
}

describe("permission precedence (CONTRACT.md)", () => {
  it("denies when no layer has an entry", () => {
    expect(verdict({})).toEqual({ decision: "deny", reason_code: "permission_deny", layer: null });
  });

  it("uses defaults when nothing more specific applies", () => {
    expect(verdict({ defaults: { interactive: { permission: "allow" } } })).toMatchObject({
      decision: "allow",
      layer: "defaults.interactive",
    });
  });

  it("lets a tools entry override defaults in both directions", () => {
    expect(
      verdict({ defaults: { "*": { permission: "allow" } }, tools: { t: { "*": { permission: "deny" } } } }),
    ).toMatchObject({ decision: "deny", reason_code: "permission_deny", layer: "tools.t.*" });
    expect(
      verdict({ defaults: { "*": { permission: "deny" } }, tools: { t: { "*": { permission: "allow" } } } }),
    ).toMatchObject({ decision: "allow", layer: "tools.t.*" });
  });

  it("applies tools and users together: a deny in either wins over an allow", () => {
    expect(
      verdict({
        tools: { t: { "*": { permission: "allow" } } },
        users: { bob: { "*": { permission: "deny" } } },
      }),
    ).toMatchObject({ decision: "deny", layer: "users.bob.*" });
    expect(
      verdict({
        tools: { t: { "*": { permission: "deny" } } },
        users: { bob: { "*": { permission: "allow" } } },
      }),
    ).toMatchObject({ decision: "deny", layer: "tools.t.*" });
  });

  it("lets an ask in tools or users win over an allow, and a deny over an ask", () => {
    expect(
      verdict({
        tools: { t: { "*": { permission: "ask" } } },
        users: { bob: { "*": { permission: "allow" } } },
      }),
    ).toMatchObject({ decision: "ask", reason_code: "approval_required" });
    expect(
      verdict({
        tools: { t: { "*": { permission: "allow" } } },
        users: { bob: { "*": { permission: "ask" } } },
      }),
    ).toMatchObject({ decision: "ask", reason_code: "approval_required" });
    expect(
      verdict({
        tools: { t: { "*": { permission: "ask" } } },
        users: { bob: { "*": { permission: "deny" } } },
      }),
    ).toMatchObject({ decision: "deny" });
  });

  it("lets a users entry alone decide over defaults", () => {
    expect(
      verdict({
        defaults: { "*": { permission: "deny" } },
        users: { bob: { interactive: { permission: "allow" } } },
      }),
    ).toMatchObject({ decision: "allow", layer: "users.bob.interactive" });
  });

  it("lets a user_tools entry decide over tools, users and defaults", () => {
    const layers = {
      defaults: { "*": { permission: "deny" } },
      tools: { t: { "*": { permission: "deny" } } },
      users: { bob: { "*": { permission: "deny" } } },
    };
    expect(
      verdict({ ...layers, user_tools: { bob: { t: { interactive: { permission: "allow" } } } } }),
    ).toMatchObject({
      decision: "allow",
      layer: "user_tools.bob.t.interactive",
    });
    expect(
      verdict({
        defaults: { "*": { permission: "allow" } },
        tools: { t: { "*": { permission: "allow" } } },
        user_tools: { bob: { t: { "*": { permission: "deny" } } } },
      }),
    ).toMatchObject({ decision: "deny", layer: "user_tools.bob.t.*" });
  });

  it("applies a user_tools entry only in its tier", () => {
    const policy = {
      tools: { t: { "*": { permission: "deny" } } },
      user_tools: { bob: { t: { interactive: { permission: "allow" } } } },
    };
    expect(verdict(policy, "interactive").decision).toBe("allow");
    expect(verdict(policy, "background")).toMatchObject({ decision: "deny", layer: "tools.t.*" });
  });

  it("prefers the call's tier over * within one cell", () => {
    const policy = { tools: { t: { "*": { permission: "deny" }, interactive: { permission: "allow" } } } };
    expect(verdict(policy, "interactive")).toMatchObject({ decision: "allow", layer: "tools.t.interactive" });
    expect(verdict(policy, "background")).toMatchObject({ decision: "deny", layer: "tools.t.*" });
  });

  it("ignores an entry without permission for the permission decision", () => {
    expect(
      verdict({
        defaults: { "*": { permission: "allow" } },
        user_tools: { bob: { t: { "*": { rate_limit_per_minute: 5 } } } },
      }),
    ).toMatchObject({ decision: "allow", layer: "defaults.*" });
  });

  it("checks required scopes whatever the permission says", () => {
    const policy = compile(withPolicy({ user_tools: { bob: { t: { "*": { permission: "allow" } } } } }));
    const d = decideCall(policy, { principal: principal({ user: "bob", scopes: [] }), tool: "t" });
    expect(d).toMatchObject({ decision: "deny", reason_code: "missing_scope" });
    expect(d.reason).toContain("t:use");
  });

  it("adds a rate-limit bucket for every layer that sets one, merging layers that count the same calls", () => {
    const policy = compile(
      withPolicy({
        defaults: { "*": { permission: "allow", rate_limit_per_minute: 60 } },
        users: { bob: { "*": { rate_limit_per_minute: 30 } } },
        tools: { t: { interactive: { rate_limit_per_minute: 10 } } },
        user_tools: { bob: { t: { "*": { rate_limit_per_minute: 5 } } } },
      }),
    );
    const d = decideCall(policy, { principal: bob, tool: "t" });
    expect(d.buckets.map((b) => [b.limit, b.source])).toEqual([
      [30, "users.bob.*"],
      [5, "user_tools.bob.t.*"],
    ]);
    const other = decideCall(policy, { principal: bob, tool: "other" });
    expect(other.buckets.map((b) => b.limit)).toEqual([30]);
    expect(other.buckets[0]!.key).toBe(d.buckets[0]!.key);
  });

  it("takes the strictest post-transform of every cell that applies", () => {
    const d = (policy: Partial<Record<keyof PolicyConfig, unknown>>) =>
      decideCall(compile(withPolicy(policy)), { principal: bob, tool: "t" }).post_transform;
    expect(d({ defaults: { "*": { permission: "allow" } } })).toBe("audit");
    expect(d({ defaults: { "*": { permission: "allow", post_transform: "redact" } } })).toBe("redact");
    expect(
      d({
        tools: { t: { "*": { permission: "allow", post_transform: "redact" } } },
        users: { bob: { "*": { permission: "allow", post_transform: "block" } } },
      }),
    ).toBe("block");
    // A user_tools cell decides the permission, yet a stricter tools cell still redacts the output.
    expect(
      d({
        tools: { t: { "*": { permission: "allow", post_transform: "redact" } } },
        user_tools: { bob: { t: { "*": { permission: "allow", post_transform: "audit" } } } },
      }),
    ).toBe("redact");
    expect(
      d({
        defaults: { "*": { permission: "allow", post_transform: "block" } },
        user_tools: { bob: { t: { "*": { permission: "allow" } } } },
      }),
    ).toBe("block");
  });

  it("resolves a tier cell field by field: what it leaves out comes from the '*' cell", () => {
    // The interactive cell only sets a rate limit; the '*' cell's deny still applies to interactive calls.
    expect(
      verdict({
        defaults: { "*": { permission: "allow" } },
        tools: { t: { "*": { permission: "deny" }, interactive: { rate_limit_per_minute: 100 } } },
      }),
    ).toMatchObject({ decision: "deny", reason_code: "permission_deny", layer: "tools.t.*" });
    // The interactive cell sets a permission only; the '*' cell's rate limit is kept.
    const d = decideCall(
      compile(
        withPolicy({
          tools: {
            t: {
              "*": { permission: "deny", rate_limit_per_minute: 7 },
              interactive: { permission: "allow" },
            },
          },
        }),
      ),
      { principal: bob, tool: "t" },
    );
    expect(d).toMatchObject({ decision: "allow", layer: "tools.t.interactive" });
    expect(d.buckets.map((b) => [b.limit, b.source])).toEqual([[7, "tools.t.*"]]);
  });
});
