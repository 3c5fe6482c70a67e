/** Task-scoped capabilities in process: `gov.runAs(p, { agent, capabilities })`, delegation, audit, explain. */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runFor } from "../../src/adapters/common.js";
import { digestCapabilities } from "../../src/audit/record.js";
import { runContextOf, withContext } from "../../src/context/run.js";
import type { Governor } from "../../src/govern/governor.js";
import { callInput } from "../../src/govern/pipeline.js";
import { explain, formatExplanation } from "../../src/policy/explain.js";
import { testGovernor } from "../support/governor.js";
import { principal } from "../support/principal.js";

let gov: Governor;
const alice = principal({ user: "alice", scopes: ["customers:read", "refunds:write", "email.read"] });

const PAY = {
  tools: [
    "get_customer",
    { tool: "issue_refund", when: "args.customer == task.customer && args.amount <= task.max" },
  ],
  data: { customer: "c-1", max: 100 },
};

beforeAll(async () => {
  ({ gov } = await testGovernor());
});
afterAll(async () => {
  await gov?.close();
});

const tools = () => ({
  get: gov.governed({ name: "get_customer", execute: async (args: { id: string }) => ({ id: args.id }) }),
  refund: gov.governed({
    name: "issue_refund",
    execute: async (args: { customer: string; amount: number }) => ({ refunded: args.amount }),
  }),
  mail: gov.governed({ name: "read_email", execute: async () => ({ mails: [] }) }),
});

/** The reason code a governed call was refused with, or "ok". */
async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "ok";
  } catch (e) {
    return (e as { details?: { reason_code?: string } }).details?.reason_code ?? String(e);
  }
}

describe("capabilities on a run", () => {
  it("allows the tools the task needs, with arguments its conditions accept", async () => {
    const t = tools();
    await gov.runAs(alice, { agent: "refund-bot", capabilities: PAY }, async () => {
      expect(await outcome(t.get({ id: "c-1" }))).toBe("ok");
      expect(await outcome(t.refund({ customer: "c-1", amount: 40 }))).toBe("ok");
    });
  });

  it("denies a tool outside them with capability_deny, though the tenant policy allows it", async () => {
    const t = tools();
    await gov.runAs(alice, { agent: "refund-bot", capabilities: PAY }, async () => {
      expect(await outcome(t.mail({}))).toBe("capability_deny");
    });
    await gov.runAs(alice, { agent: "mail-bot" }, async () => {
      expect(await outcome(t.mail({}))).toBe("ok");
    });
  });

  it("denies arguments outside the task's data: another payee, a larger amount", async () => {
    const t = tools();
    await gov.runAs(alice, { agent: "refund-bot", capabilities: PAY }, async () => {
      expect(await outcome(t.refund({ customer: "c-666", amount: 40 }))).toBe("capability_deny");
      expect(await outcome(t.refund({ customer: "c-1", amount: 101 }))).toBe("capability_deny");
    });
  });

  it("is applied on top of the tenant's policy: a call must pass both", async () => {
    const t = tools();
    const wide = { tools: [{ tool: "issue_refund", when: "true" }] };
    await gov.runAs(alice, { agent: "refund-bot", capabilities: wide }, async () => {
      // granted by the capabilities, but the tenant's rule still asks for approval over 500
      expect(await outcome(t.refund({ customer: "c-1", amount: 900 }))).toBe("approval_required");
    });
    const bob = principal({ user: "bob", scopes: ["customers:read"] });
    await gov.runAs(bob, { agent: "refund-bot", capabilities: wide }, async () => {
      expect(await outcome(t.refund({ customer: "c-1", amount: 9 }))).toBe("missing_scope");
    });
  });

  it("fails closed: a condition that errors at run time denies with capability_error", async () => {
    const t = tools();
    const caps = { tools: [{ tool: "issue_refund", when: "args.amount <= task.limit.per_call" }] };
    await gov.runAs(alice, { agent: "refund-bot", capabilities: caps }, async () => {
      expect(await outcome(t.refund({ customer: "c-1", amount: 1 }))).toBe("capability_error");
    });
    const typed = { tools: [{ tool: "issue_refund", when: "args.amount <= 10" }] };
    await gov.runAs(alice, { agent: "refund-bot", capabilities: typed }, async () => {
      expect(await outcome(t.refund({ customer: "c-1", amount: "all of it" as never }))).toBe(
        "capability_error",
      );
    });
  });

  it("refuses, when the run starts, a condition that does not compile or a set that is malformed", () => {
    const bad = { tools: [{ tool: "issue_refund", when: "args.amount <= taks.max" }] };
    expect(() => gov.runAs(alice, { agent: "bot", capabilities: bad }, () => 1)).toThrow(
      /unknown variable "taks"/,
    );
    expect(() =>
      gov.runAs(alice, { agent: "bot", capabilities: { tools: [{ name: "x" }] } as never }, () => 1),
    ).toThrow(/capabilities of bot are invalid/);
    const message = { tools: ["get_customer"], data: { x: { $typeName: "google.protobuf.Value" } } };
    expect(() => gov.runAs(alice, { agent: "bot", capabilities: message }, () => 1)).toThrow(/\$typeName/);
  });

  it("an empty set allows nothing", async () => {
    const t = tools();
    await gov.runAs(alice, { agent: "bot", capabilities: { tools: [] } }, async () => {
      expect(await outcome(t.get({ id: "c-1" }))).toBe("capability_deny");
    });
  });
});

describe("capabilities in a framework's own context", () => {
  it("runFor carries them: a run handed to a framework is limited like gov.runAs's", async () => {
    const t = tools();
    const run = runFor(alice, { agent: "framework-bot", capabilities: { tools: ["get_customer"] } });
    await withContext(run, async () => {
      expect(await outcome(t.get({ id: "c-1" }))).toBe("ok");
      expect(await outcome(t.mail({}))).toBe("capability_deny");
    });
    expect(() =>
      runFor(alice, { agent: "x", capabilities: { tools: [{ tool: "a", when: "nope(" }] } }),
    ).toThrow(/capabilities of x are invalid/);
  });
});

describe("capabilities only narrow", () => {
  it("a delegation's capabilities are intersected with its parent's: it cannot widen", async () => {
    const t = tools();
    await gov.runAs(alice, { agent: "planner", capabilities: PAY }, () =>
      gov.delegate(
        "helper",
        {
          capabilities: {
            tools: ["read_email", { tool: "issue_refund", when: "true" }, "get_customer"],
          },
        },
        async () => {
          // the child names read_email, the parent does not grant it
          expect(await outcome(t.mail({}))).toBe("capability_deny");
          // the child's "true" does not lift the parent's condition
          expect(await outcome(t.refund({ customer: "c-666", amount: 5 }))).toBe("capability_deny");
          expect(await outcome(t.refund({ customer: "c-1", amount: 5 }))).toBe("ok");
        },
      ),
    );
  });

  it("a delegation can narrow further, and one without capabilities keeps the parent's", async () => {
    const t = tools();
    await gov.runAs(alice, { agent: "planner", capabilities: PAY }, async () => {
      await gov.delegate("reader", { capabilities: { tools: ["get_customer"] } }, async () => {
        expect(await outcome(t.get({ id: "c-1" }))).toBe("ok");
        expect(await outcome(t.refund({ customer: "c-1", amount: 5 }))).toBe("capability_deny");
      });
      await gov.delegate("inherits", {}, async () => {
        expect(await outcome(t.mail({}))).toBe("capability_deny");
        expect(await outcome(t.refund({ customer: "c-1", amount: 5 }))).toBe("ok");
      });
    });
  });

  it("capabilities on a delegation of a run without any limit that delegation only", async () => {
    const t = tools();
    await gov.runAs(alice, { agent: "planner" }, async () => {
      await gov.delegate("reader", { capabilities: { tools: ["get_customer"] } }, async () => {
        expect(await outcome(t.mail({}))).toBe("capability_deny");
      });
      expect(await outcome(t.mail({}))).toBe("ok");
    });
  });
});

describe("audit and explain", () => {
  it("records the capability set's digest on every attempt and outcome of the run, and none without", async () => {
    const t = tools();
    const carol = principal({ user: "carol", scopes: ["customers:read", "refunds:write"] });
    let layers: unknown;
    await gov.runAs(carol, { agent: "refund-bot", capabilities: PAY }, async () => {
      await outcome(t.get({ id: "c-1" }));
      await outcome(t.refund({ customer: "c-9", amount: 1 }));
      layers = (await import("../../src/context/run.js")).currentRun().capabilities;
    });
    await gov.runAs(carol, { agent: "plain" }, async () => {
      await outcome(t.get({ id: "c-2" }));
    });
    const { records } = await gov.queryAudit({ user: "carol" });
    const digest = digestCapabilities(layers);
    const withCaps = records.filter((r) => r.agent === "refund-bot");
    expect(withCaps.map((r) => [r.kind, r.tool, r.reason_code])).toEqual(
      expect.arrayContaining([
        ["attempt", "get_customer", "ok"],
        ["outcome", "get_customer", "ok"],
        ["attempt", "issue_refund", "capability_deny"],
      ]),
    );
    for (const r of withCaps) expect(r.capabilities).toBe(digest);
    for (const r of records.filter((r) => r.agent === "plain")) expect(r.capabilities).toBeUndefined();
    expect(digest).toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  it("explains a capability denial step by step", () => {
    const run = runContextOf(alice, { chain: ["refund-bot"], tier: "interactive" });
    const layer = {
      agent: "refund-bot",
      tools: PAY.tools.map((g) => (typeof g === "string" ? { tool: g } : g)),
      data: PAY.data,
    };
    const input = {
      ...callInput(run, "issue_refund", { customer: "c-666", amount: 5 }, 30, Date.now()),
      capabilities: [layer],
    };
    const e = explain(gov.policy, input);
    expect(e.decision.reason_code).toBe("capability_deny");
    expect(e.steps.map((s) => [s.step, s.outcome])).toContainEqual([
      "capabilities",
      "refund-bot: condition false",
    ]);
    expect(formatExplanation(input, e)).toMatch(
      /result: deny \(capability_deny\).*outside the capabilities of refund-bot/,
    );
  });
});
