import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { currentRun, delegate, runAs, tryCurrentRun } from "../../src/context/run.js";
import { isOnbehalfError } from "../../src/errors.js";
import { principal } from "../support/principal.js";

const alice = principal({ user: "alice", scopes: ["a", "b", "c", "d"] });
const bob = principal({ user: "bob", scopes: ["x", "y"] });

describe("run context", () => {
  it("throws ERR_NO_IDENTITY from currentRun when nothing is bound, and tryCurrentRun returns undefined", () => {
    expect(tryCurrentRun()).toBeUndefined();
    try {
      currentRun();
      expect.unreachable();
    } catch (e) {
      expect(isOnbehalfError(e, "ERR_NO_IDENTITY")).toBe(true);
    }
  });

  it("binds the human, the agent and the tier for the duration of the callback only", async () => {
    await runAs(alice, { agent: "support-bot", tier: "interactive" }, async () => {
      await sleep(1);
      const run = currentRun();
      expect(run.principal.user).toBe("alice");
      expect(run.chain).toEqual(["support-bot"]);
      expect(run.tier).toBe("interactive");
      expect([...run.scopes].sort()).toEqual(["a", "b", "c", "d"]);
    });
    expect(tryCurrentRun()).toBeUndefined();
  });

  it("narrows scopes through three delegation hops and keeps the chain in order", async () => {
    await runAs(alice, { agent: "root" }, () =>
      delegate("A", { scopes: ["a", "b", "c"] }, () =>
        delegate("B", { scopes: ["b", "c", "x"] }, () =>
          delegate("C", { scopes: ["c", "a"], tier: "background" }, async () => {
            await sleep(1);
            const run = currentRun();
            expect(run.chain).toEqual(["root", "A", "B", "C"]);
            expect([...run.scopes]).toEqual(["c"]);
            expect(run.tier).toBe("background");
            expect(run.hops.map((h) => h.scopes)).toEqual([
              null,
              ["a", "b", "c"],
              ["b", "c", "x"],
              ["c", "a"],
            ]);
          }),
        ),
      ),
    );
  });

  it("inherits the parent's scopes when a hop names none, and defaults the tier to subagent", () => {
    runAs(alice, { agent: "root" }, () =>
      delegate("A", { scopes: ["a"] }, () =>
        delegate("B", {}, () => {
          expect([...currentRun().scopes]).toEqual(["a"]);
          expect(currentRun().tier).toBe("subagent");
        }),
      ),
    );
  });

  it("never widens: a hop asking for a scope the human lacks does not get it", () => {
    runAs(bob, { agent: "root" }, () =>
      delegate("greedy", { scopes: ["x", "admin"] }, () => {
        expect([...currentRun().scopes]).toEqual(["x"]);
      }),
    );
  });

  it("survives Promise.all fan-out, timers and setImmediate", async () => {
    await runAs(alice, { agent: "root" }, async () => {
      const seen = await Promise.all([
        (async () => {
          await sleep(5);
          return currentRun().principal.user;
        })(),
        new Promise<string>((resolve) => setTimeout(() => resolve(currentRun().principal.user), 2)),
        new Promise<string>((resolve) => setImmediate(() => resolve(currentRun().principal.user))),
        delegate("child", { scopes: ["a"] }, async () => {
          await sleep(3);
          return currentRun().chain.join(">");
        }),
      ]);
      expect(seen).toEqual(["alice", "alice", "alice", "root>child"]);
      expect(currentRun().chain).toEqual(["root"]);
    });
  });

  it("keeps parallel runs for different humans apart", async () => {
    const observe = (p: typeof alice, agent: string) =>
      runAs(p, { agent }, async () => {
        const out: string[] = [];
        for (let i = 0; i < 20; i++) {
          await sleep(Math.random() * 3);
          await delegate(`${agent}-sub${i}`, {}, async () => {
            await sleep(Math.random() * 2);
            const run = currentRun();
            out.push(`${run.principal.user}:${run.chain[0]}:${run.chain.length}`);
          });
        }
        return out;
      });
    const [a, b] = await Promise.all([observe(alice, "bot-a"), observe(bob, "bot-b")]);
    expect(new Set(a)).toEqual(new Set(["alice:bot-a:2"]));
    expect(new Set(b)).toEqual(new Set(["bob:bot-b:2"]));
  });

  it("rejects an unknown tier and an empty agent name", () => {
    expect(() => runAs(alice, { agent: "x", tier: "batch" as never }, () => 1)).toThrow(
      /unknown tier "batch"/,
    );
    expect(() => runAs(alice, { agent: "" }, () => 1)).toThrow(/agent needs a name/);
  });

  it("refuses to delegate with nothing bound", () => {
    expect(() => delegate("x", {}, () => 1)).toThrow(/no identity is bound/);
  });
});
