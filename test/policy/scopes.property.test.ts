import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { currentRun, delegate, runAs } from "../../src/context/run.js";
import { compile, decideCall } from "../support/policy.js";
import { principal } from "../support/principal.js";

const UNIVERSE = ["a", "b", "c", "d", "e", "admin", "x:y", "*"];
const scopeList = fc.uniqueArray(fc.constantFrom(...UNIVERSE), { maxLength: UNIVERSE.length });
const hop = fc.record({
  agent: fc.string({ minLength: 1, maxLength: 8 }),
  scopes: fc.option(scopeList, { nil: undefined }),
});

/** Delegate through every hop, then report the innermost run's scopes and chain. */
function throughHops(
  hops: { agent: string; scopes: string[] | undefined }[],
  at = 0,
): { scopes: string[]; chain: readonly string[] } {
  if (at === hops.length) return { scopes: [...currentRun().scopes], chain: currentRun().chain };
  const h = hops[at]!;
  return delegate(h.agent, h.scopes === undefined ? {} : { scopes: h.scopes }, () =>
    throughHops(hops, at + 1),
  );
}

describe("scope attenuation (property)", () => {
  it("no sequence of delegations ever yields a scope outside the human's, or outside any hop's", () => {
    fc.assert(
      fc.property(scopeList, fc.array(hop, { maxLength: 8 }), (human, hops) => {
        const p = principal({ user: "u", scopes: human });
        const { scopes, chain } = runAs(p, { agent: "root" }, () => throughHops(hops));
        for (const s of scopes) {
          expect(human).toContain(s);
          for (const h of hops) if (h.scopes !== undefined) expect(h.scopes).toContain(s);
        }
        expect(chain).toEqual(["root", ...hops.map((h) => h.agent)]);
      }),
      { numRuns: 500 },
    );
  });

  it("allows a tool after any delegations only if every hop and the human hold its scope", () => {
    const policy = compile({
      tools: UNIVERSE.map((s) => ({ name: `needs_${s.replace(/[^a-z]/g, "_")}`, required_scopes: [s] })),
      tenants: [{ id: "acme", policy: { defaults: { "*": { permission: "allow" } } } }],
    });
    fc.assert(
      fc.property(
        scopeList,
        fc.array(hop, { maxLength: 6 }),
        fc.constantFrom(...UNIVERSE),
        (human, hops, needed) => {
          const p = principal({ user: "u", scopes: human });
          const { scopes, chain } = runAs(p, { agent: "root" }, () => throughHops(hops));
          const d = decideCall(policy, {
            principal: p,
            tool: `needs_${needed.replace(/[^a-z]/g, "_")}`,
            scopes,
            chain: [...chain],
          });
          const held =
            human.includes(needed) && hops.every((h) => h.scopes === undefined || h.scopes.includes(needed));
          expect(d.decision).toBe(held ? "allow" : "deny");
          for (const s of d.effective_scopes) expect(human).toContain(s);
        },
      ),
      { numRuns: 500 },
    );
  });
});
