import { describe, expect, it } from "vitest";
import { compile, decideCall } from "../support/policy.js";
import { principal } from "../support/principal.js";

const tools = [
  { name: "read", required_scopes: ["docs:read"] },
  { name: "write", required_scopes: ["docs:write"] },
];
const allowAll = { defaults: { "*": { permission: "allow" as const } } };

describe("tenants and membership", () => {
  const policy = compile({
    tools,
    tenants: [
      {
        id: "acme",
        require_membership: true,
        users: [
          { uid: "alice", scopes: ["docs:read"] },
          { uid: "mallory", disabled: true },
        ],
        policy: allowAll,
      },
      { id: "globex", policy: allowAll, users: [{ uid: "gus", disabled: true }] },
    ],
  });
  const alice = principal({ user: "alice", scopes: ["docs:read", "docs:write"] });

  it("caps the token's scopes with the directory's list", () => {
    expect(decideCall(policy, { principal: alice, tool: "read" })).toMatchObject({
      decision: "allow",
      effective_scopes: ["docs:read"],
    });
    expect(decideCall(policy, { principal: alice, tool: "write" })).toMatchObject({
      decision: "deny",
      reason_code: "missing_scope",
    });
  });

  it("denies users who are not listed when membership is required", () => {
    const d = decideCall(policy, {
      principal: principal({ user: "eve", scopes: ["docs:read"] }),
      tool: "read",
    });
    expect(d).toMatchObject({ decision: "deny", reason_code: "not_a_member" });
  });

  it("denies disabled users, even where membership is not required", () => {
    expect(
      decideCall(policy, { principal: principal({ user: "mallory", scopes: ["docs:read"] }), tool: "read" })
        .reason_code,
    ).toBe("not_a_member");
    expect(
      decideCall(policy, {
        principal: principal({ user: "gus", tenant: "globex", scopes: ["docs:read"] }),
        tool: "read",
      }).reason_code,
    ).toBe("not_a_member");
  });

  it("denies a call that names another tenant than the token's", () => {
    const d = decideCall(policy, { principal: alice, tool: "read", tenant: "globex" });
    expect(d).toMatchObject({ decision: "deny", reason_code: "tenant_mismatch" });
    expect(d.reason).toContain('"globex"');
  });

  it("denies a token without a tenant and a tenant that is not configured", () => {
    expect(
      decideCall(policy, { principal: principal({ user: "x", tenant: null }), tool: "read" }).reason_code,
    ).toBe("tenant_mismatch");
    const d = decideCall(policy, { principal: principal({ user: "x", tenant: "initech" }), tool: "read" });
    expect(d).toMatchObject({ decision: "deny", reason_code: "permission_deny" });
    expect(d.reason).toContain("not configured");
  });

  it("denies an undeclared tool and oversized arguments", () => {
    expect(decideCall(policy, { principal: alice, tool: "rm_rf" })).toMatchObject({
      decision: "deny",
      reason_code: "permission_deny",
    });
    const big = { blob: "x".repeat(70_000) };
    const d = decideCall(policy, { principal: alice, tool: "read", args: big });
    expect(d).toMatchObject({ decision: "deny", reason_code: "error" });
    expect(d.reason).toContain("over the limit");
  });
});
