/**
 * What a rule may cost (issue 11): a rule that nests comprehensions over the arguments must not let one call
 * hold the server for seconds. The read budget and the size limit deny (`rule_over_budget`), fail closed;
 * a rule within them answers as before.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RE2JS } from "@bufbuild/re2";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { main } from "../../src/cli/commands.js";
import type { ConfigInput } from "../../src/config/schema.js";
import { REASON_CODES } from "../../src/decision.js";
import { type CelActivation, compileCondition } from "../../src/policy/cel.js";
import type { CompiledPolicy } from "../../src/policy/compile.js";
import type { OnbehalfServer } from "../../src/server/app.js";
import { type OidcProviderHandle, startOidcProvider } from "../support/oidc.js";
import { compile, decideCall } from "../support/policy.js";
import { principal } from "../support/principal.js";
import { call, SERVER_TOOLS, serverConfig, startTestServer, userToken } from "../support/server.js";

/** Quadratic in the number of items: the rule from the issue. */
const PAIRS = "args.items.exists(a, args.items.exists(b, a.k == b.k && a != b))";

/** `n` distinct items: 2,900 of them are a ~30 KB body. */
const items = (n: number) => Array.from({ length: n }, (_, i) => ({ k: i }));

const alice = principal({ user: "alice", scopes: ["refunds:write"] });

function config(rules: unknown[], extra: { limits?: object; mode?: "shadow" } = {}): ConfigInput {
  return {
    tools: [{ name: "issue_refund", required_scopes: ["refunds:write"] }, { name: "ping" }],
    tenants: [
      {
        id: "acme",
        policy: {
          defaults: { "*": { permission: "allow" } },
          rules,
          ...(extra.mode === undefined ? {} : { mode: extra.mode }),
        } as never,
      },
    ],
    ...(extra.limits === undefined ? {} : { limits: extra.limits }),
  };
}

function timedDecide(...args: Parameters<typeof decideCall>) {
  const t0 = performance.now();
  const decision = decideCall(...args);
  return { decision, ms: performance.now() - t0 };
}

describe("regular expressions in rules", () => {
  const DOMAINS = "args.to.exists(r, !r.matches('^[a-z0-9.]+@(corp|subsidiary)\\\\.(com|net)$'))";
  const policy = compile(
    config([
      { id: "outside", tools: ["ping"], when: DOMAINS, effect: "deny" },
      {
        id: "body",
        tools: ["issue_refund"],
        when: "args.items.exists(i, args.body.matches('secret'))",
        effect: "deny",
      },
    ]),
  );

  it("compiles a pattern once, not once per element or per call", () => {
    const compiled = vi.spyOn(RE2JS, "compile");
    const to = Array.from({ length: 1000 }, (_, i) => `user${i}@corp.com`);
    for (let i = 0; i < 3; i++) {
      const allowed = decideCall(policy, { principal: alice, tool: "ping", args: { to } });
      expect(allowed).toMatchObject({ decision: "allow" });
    }
    expect(compiled.mock.calls.length).toBeLessThanOrEqual(1); // none when an earlier test compiled it
    compiled.mockRestore();
    const outside = decideCall(policy, {
      principal: alice,
      tool: "ping",
      args: { to: [...to, "eve@evil.example"] },
    });
    expect(outside).toMatchObject({ decision: "deny", reason_code: "rule_deny", rule: "outside" });
  });

  it("charges the text a pattern scans inside a comprehension to the budget", () => {
    const args = { items: items(800), body: "x".repeat(30_000) };
    const { decision, ms } = timedDecide(policy, { principal: alice, tool: "issue_refund", args });
    expect(decision).toMatchObject({ decision: "deny", reason_code: "rule_over_budget" });
    expect(ms).toBeLessThan(200);
  });
});

describe("the read budget (limits.max_rule_reads)", () => {
  const policy = compile(config([{ id: "duplicates", tools: ["ping"], when: PAIRS, effect: "ask" }]));

  it("denies a nested comprehension over a 30 KB argument list with rule_over_budget, in milliseconds", () => {
    const args = { items: items(2900) };
    expect(JSON.stringify(args).length).toBeGreaterThan(30_000);
    decideCall(policy, { principal: alice, tool: "ping", args: { items: items(200) } }); // warm the code path
    const { decision, ms } = timedDecide(policy, { principal: alice, tool: "ping", args });
    expect(decision).toMatchObject({
      decision: "deny",
      reason_code: "rule_over_budget",
      rule: "duplicates",
    });
    expect(decision.reason).toMatch(/^rule duplicates is over its budget: .*limits\.max_rule_reads/);
    expect(ms).toBeLessThan(200);
  });

  it("still answers the same rule on a small list, as before", () => {
    expect(decideCall(policy, { principal: alice, tool: "ping", args: { items: items(20) } })).toMatchObject({
      decision: "allow",
      reason_code: "ok",
    });
    expect(
      decideCall(policy, { principal: alice, tool: "ping", args: { items: [{ k: 1 }, { k: 1, x: 2 }] } }),
    ).toMatchObject({ decision: "ask", reason_code: "approval_required", rule: "duplicates" });
  });

  it("is the config's: a smaller budget stops a smaller list, a larger one lets it through", () => {
    const args = { items: items(60) };
    const tight = compile(
      config([{ id: "duplicates", when: PAIRS, effect: "ask" }], { limits: { max_rule_reads: 1_000 } }),
    );
    expect(decideCall(tight, { principal: alice, tool: "ping", args })).toMatchObject({
      decision: "deny",
      reason_code: "rule_over_budget",
    });
    const loose = compile(
      config([{ id: "duplicates", when: PAIRS, effect: "ask" }], { limits: { max_rule_reads: 1_000_000 } }),
    );
    expect(decideCall(loose, { principal: alice, tool: "ping", args })).toMatchObject({
      decision: "allow",
    });
  });

  it("cannot be absorbed: an error CEL would swallow (`|| true`) is still a deny", () => {
    const p = compile(config([{ id: "swallowed", when: `${PAIRS} || true`, effect: "ask" }]));
    expect(decideCall(p, { principal: alice, tool: "ping", args: { items: items(2900) } })).toMatchObject({
      decision: "deny",
      reason_code: "rule_over_budget",
      rule: "swallowed",
    });
  });

  it("counts reads of user.claims as well (frozen, as the principal's are)", () => {
    const p = compile(
      config([
        {
          id: "claims",
          when: "user.claims.groups.exists(a, user.claims.groups.exists(b, a == b && a != b))",
          effect: "ask",
        },
      ]),
    );
    const many = principal({
      user: "mallory",
      claims: Object.freeze({ groups: Object.freeze(Array.from({ length: 3000 }, (_, i) => `g${i}`)) }),
    });
    const { decision, ms } = timedDecide(p, { principal: many, tool: "ping" });
    expect(decision).toMatchObject({ decision: "deny", reason_code: "rule_over_budget", rule: "claims" });
    expect(ms).toBeLessThan(200);
    const few = principal({ user: "ann", claims: Object.freeze({ groups: Object.freeze(["a", "b"]) }) });
    expect(decideCall(p, { principal: few, tool: "ping" })).toMatchObject({ decision: "allow" });
  });

  it("keeps one pass over a list within budget: a linear rule over 600 items still allows and asks", () => {
    const p = compile(
      config([
        { id: "pricey", when: "args.items.exists(i, i.price > 1000 && 'gift' in i.tags)", effect: "ask" },
      ]),
    );
    const list = Array.from({ length: 600 }, (_, i) => ({ sku: `s-${i}`, price: i, tags: ["gift", "x"] }));
    expect(decideCall(p, { principal: alice, tool: "ping", args: { items: list } })).toMatchObject({
      decision: "allow",
    });
    list.push({ sku: "big", price: 5000, tags: ["gift"] });
    expect(decideCall(p, { principal: alice, tool: "ping", args: { items: list } })).toMatchObject({
      decision: "ask",
      rule: "pricey",
    });
  });

  it("in shadow mode, allows and reports the deny, as for any rule that fails to evaluate", () => {
    const p = compile(config([{ id: "duplicates", when: PAIRS, effect: "ask" }], { mode: "shadow" }));
    const d = decideCall(p, { principal: alice, tool: "ping", args: { items: items(2900) } });
    expect(d).toMatchObject({ decision: "allow", mode: "shadow" });
    expect(d.shadow).toMatchObject({ decision: "deny", reason_code: "rule_over_budget", rule: "duplicates" });
  });

  it("is a reason code of its own", () => {
    expect(REASON_CODES).toContain("rule_over_budget");
  });
});

describe("what a metered rule sees", () => {
  // The same condition inside a one-element comprehension is metered (its inputs handed over through the
  // meter); alone it is not. On any JSON, both must answer the same: the meter counts, it does not change.
  const CONDITIONS = [
    "args.a == 1",
    "has(args.a)",
    "'a' in args",
    "size(args) > 1",
    "args == {'a': 1.0}",
    "args.a == args.b",
    "args.b[0] == 'x'",
    "args.b + args.b == args.b",
    "1 in args.b",
    "args.b.exists(x, x == 2)",
    "args.b.all(x, x != null)",
    "args.b.exists_one(x, x == 1)",
    "args.b.filter(x, x == 1).size() == 1",
    "args.c.exists(k, k == 'b')",
    "user.claims.g == args.b",
    "user.claims.exists(k, k == 'g')",
    "'s' in user.scopes && chain[0] == 'bot'",
  ];
  const key = fc.constantFrom("a", "b", "c", "g");
  const { json } = fc.letrec((tie) => ({
    json: fc.oneof(
      { depthSize: "small" },
      fc.constantFrom(1, 2, 1.5, "x", true, null),
      fc.array(tie("json"), { maxLength: 3 }),
      fc.dictionary(key, tie("json"), { maxKeys: 3, noNullPrototype: true }),
    ),
  }));
  const object = (maxKeys: number) => fc.dictionary(key, json, { maxKeys, noNullPrototype: true });
  const activation = (args: unknown, claims: Record<string, unknown>): CelActivation => ({
    user: {
      id: "u",
      sub: "u",
      issuer: "https://idp.test/",
      email: null,
      tenant: "acme",
      scopes: Object.freeze(["s"]),
      roles: [],
      claims: Object.freeze(claims),
    },
    agent: "bot",
    tier: "interactive",
    chain: ["bot"],
    tool: "ping",
    args,
    tenant: "acme",
  });
  const conditionOf = (when: string) => {
    const compiled = compileCondition(when);
    if (!compiled.ok) throw new Error(compiled.error);
    return compiled.condition;
  };
  const answer = (r: ReturnType<ReturnType<typeof conditionOf>>) => (typeof r === "boolean" ? r : "error");

  it("answers as the same condition unmetered, on any JSON arguments and claims", () => {
    const pairs = CONDITIONS.map(
      (when) => [conditionOf(when), conditionOf(`[0].exists(_z, ${when})`)] as const,
    );
    fc.assert(
      fc.property(fc.nat(CONDITIONS.length - 1), object(4), object(2), (i, args, claims) => {
        const [plain, metered] = pairs[i] ?? [];
        if (plain === undefined || metered === undefined) return;
        const a = activation(args, claims);
        expect(answer(metered(a, 0, 0)), CONDITIONS[i]).toBe(answer(plain(a, 0, 0)));
      }),
      { numRuns: 1000 },
    );
  });
});

describe("the size limit (limits.max_rule_args_bytes)", () => {
  const rules = [
    { id: "big-refunds", tools: ["issue_refund"], when: "args.amount > 500", effect: "ask" },
    { id: "no-plugins", when: "'plugin' in chain", effect: "deny" },
  ];
  let policy: CompiledPolicy;
  beforeAll(() => {
    policy = compile(config(rules, { limits: { max_rule_args_bytes: 1024 } }));
  });
  const padding = "x".repeat(2000);

  it("denies a rule that reads args when the arguments are larger, whatever the rule's effect", () => {
    const d = decideCall(policy, { principal: alice, tool: "issue_refund", args: { amount: 20, padding } });
    expect(d).toMatchObject({ decision: "deny", reason_code: "rule_over_budget", rule: "big-refunds" });
    expect(d.reason).toContain("over limits.max_rule_args_bytes (1024)");
  });

  it("leaves a rule that does not read args alone", () => {
    expect(decideCall(policy, { principal: alice, tool: "ping", args: { padding } })).toMatchObject({
      decision: "allow",
    });
  });

  it("keeps a normal rule's answers under the limit: allow below 500, ask above", () => {
    expect(
      decideCall(policy, { principal: alice, tool: "issue_refund", args: { amount: 20 } }),
    ).toMatchObject({ decision: "allow", reason_code: "ok" });
    expect(
      decideCall(policy, { principal: alice, tool: "issue_refund", args: { amount: 900 } }),
    ).toMatchObject({ decision: "ask", reason_code: "approval_required", rule: "big-refunds" });
  });

  it("defaults to 32 KiB, under max_args_bytes", () => {
    const defaults = compile(config(rules));
    const args = { amount: 20, padding: "x".repeat(40_000) };
    expect(decideCall(defaults, { principal: alice, tool: "issue_refund", args })).toMatchObject({
      decision: "deny",
      reason_code: "rule_over_budget",
    });
  });
});

describe("policy validate", () => {
  async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
    const out: string[] = [];
    const err: string[] = [];
    const code = await main(argv, { out: (l) => out.push(l), err: (l) => err.push(l) });
    return { code, out: out.join("\n"), err: err.join("\n") };
  }

  it("warns about a nested comprehension over args, with file, line and fix, and still passes (exit 0)", async () => {
    const file = join(mkdtempSync(join(tmpdir(), "onbehalf-cost-")), "onbehalf.yaml");
    writeFileSync(
      file,
      [
        "tools:",
        "  - name: ping",
        "tenants:",
        "  - id: acme",
        "    policy:",
        "      rules:",
        "        - id: one-pass",
        "          when: \"args.items.exists(a, a.tags.exists(t, t == 'x'))\"",
        "          effect: ask",
        "        - id: duplicates",
        `          when: "${PAIRS}"`,
        "          effect: deny",
        "",
      ].join("\n"),
    );
    const r = await cli("policy", "validate", file);
    expect(r.code).toBe(0);
    expect(r.err).toContain(
      `warning: ${file}:11:17: tenants[0].policy.rules[1].when: rule "duplicates" nests a comprehension over args inside another`,
    );
    expect(r.err).toContain("rule_over_budget");
    expect(r.err).toContain("Fix: bound the inputs first");
    // A comprehension over an element of the outer one is one pass over the input: no warning.
    expect(r.err).not.toContain("one-pass");
  });
});

describe("POST /v1/check with a rule over args (a real server)", () => {
  let idp: OidcProviderHandle;
  let server: OnbehalfServer;

  beforeAll(async () => {
    idp = await startOidcProvider();
    const base = serverConfig(idp);
    server = await startTestServer(idp, {
      tools: [...SERVER_TOOLS, { name: "dedupe" }],
      tenants: [
        ...(base.tenants ?? []).filter((t) => t.id !== "acme"),
        {
          id: "acme",
          policy: {
            defaults: { "*": { permission: "allow" } },
            rules: [{ id: "duplicates", tools: ["dedupe"], when: PAIRS, effect: "deny" }],
          },
        },
      ],
    });
  });
  afterAll(async () => {
    await server?.close();
    await idp?.close();
  });

  it("denies a 30 KB body with rule_over_budget within 200 ms, and another tenant's call is answered meanwhile", async () => {
    const mallory = await userToken(idp, "mallory");
    const gina = await userToken(idp, "gina", "customers:read", { tenant: "globex" });
    const check = (token: string, body: unknown) => call(server.url, "POST", "/v1/check", { token, body });
    const timed = async (token: string, body: unknown) => {
      const t0 = performance.now();
      const r = await check(token, body);
      return { ...r, ms: performance.now() - t0 };
    };
    const big = { items: items(2900) };
    // Warm the route, the verifier, the audit and the rule: large bodies through a tool the rule is not
    // about, and the rule itself on small lists (which take ms, fixed or not).
    for (let i = 0; i < 3; i++) {
      await check(mallory, { tool: "get_customer", args: big, agent: { name: "bot" } });
      await check(mallory, { tool: "dedupe", args: { items: items(300) }, agent: { name: "bot" } });
      await check(gina, { tool: "get_customer", args: { id: "c-1" }, agent: { name: "bot" } });
    }

    const body = { tool: "dedupe", args: big, agent: { name: "bot" } };
    expect(JSON.stringify(body).length).toBeGreaterThan(30_000);
    const [stall, other] = await Promise.all([
      timed(mallory, body),
      timed(gina, { tool: "get_customer", args: { id: "c-2" }, agent: { name: "bot" } }),
    ]);
    expect(stall.status).toBe(200);
    expect(stall.body).toMatchObject({
      decision: "deny",
      reason_code: "rule_over_budget",
      rule: "duplicates",
    });
    expect(stall.ms).toBeLessThan(200);
    expect(other.body).toMatchObject({ decision: "allow", tenant: "globex" });
    expect(other.ms).toBeLessThan(200);
  }, 60_000);
});
