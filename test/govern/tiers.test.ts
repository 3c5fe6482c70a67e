/**
 * Tiers along a chain and a trace for every run, in-process (`gov.runAs`, `gov.delegate`): what
 * test/server/tiers.test.ts checks over HTTP, here without a server.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import {
  type Context,
  type ContextManager,
  context,
  ROOT_CONTEXT,
  TraceFlags,
  trace,
} from "@opentelemetry/api";
import { afterEach, describe, expect, it } from "vitest";
import { currentRun } from "../../src/context/run.js";
import type { Governor } from "../../src/govern/governor.js";
import { testGovernor } from "../support/governor.js";
import { principal } from "../support/principal.js";

const alice = principal({ user: "alice", scopes: ["customers:read", "refunds:write", "email.read"] });

let gov: Governor | undefined;
afterEach(async () => {
  await gov?.close();
  gov = undefined;
});

async function tiered(): Promise<Governor> {
  const { gov: g } = await testGovernor({
    tenants: [
      {
        id: "acme",
        policy: {
          defaults: {
            interactive: { permission: "allow" },
            subagent: { permission: "allow" },
            background: { permission: "allow" },
          },
          tools: {
            issue_refund: { subagent: { permission: "ask" }, background: { permission: "deny" } },
            get_customer: { subagent: { post_transform: "redact" } },
          },
        },
      },
    ],
  });
  return g;
}

describe("tiers along a chain, in-process", () => {
  it("decides each call under every tier of its chain: deny over ask over allow, the strictest output", async () => {
    gov = await tiered();
    const g = gov;
    const attempt = (tool: string, args: unknown) => g.begin(currentRun(), tool, args);
    const seen: string[] = [];
    await g.runAs(alice, { agent: "orchestrator", tier: "interactive" }, async () => {
      seen.push((await attempt("issue_refund", { amount: 1 })).decision.decision);
      await g.delegate("worker", { tier: "subagent" }, async () => {
        seen.push((await attempt("issue_refund", { amount: 1 })).decision.decision);
        await g.delegate("batch", { tier: "background" }, async () => {
          seen.push((await attempt("issue_refund", { amount: 1 })).decision.decision);
          const read = await attempt("get_customer", { id: "c-1" });
          expect(read.decision).toMatchObject({ decision: "allow", post_transform: "redact" });
          // back to interactive: the subagent hop before it still asks
          await g.delegate("helper", { tier: "interactive" }, async () => {
            seen.push((await attempt("issue_refund", { amount: 1 })).decision.decision);
          });
        });
      });
    });
    expect(seen).toEqual(["allow", "ask", "deny", "deny"]);
  });
});

describe("a trace for every run", () => {
  it("gives a run without a trace id a W3C one, which its delegations and every record keep", async () => {
    gov = await tiered();
    const g = gov;
    const read = g.governed({ name: "get_customer", execute: () => "ok" });
    let outer = "";
    let inner = "";
    await g.runAs(alice, { agent: "bot" }, async () => {
      outer = currentRun().traceId;
      await read({});
      await g.delegate("helper", {}, async () => {
        inner = currentRun().traceId;
        await read({});
      });
    });
    expect(outer).toMatch(/^[0-9a-f]{32}$/);
    expect(inner).toBe(outer);
    await g.flush();
    const records = (await g.queryAudit({ trace_id: outer })).records;
    expect(records.map((r) => `${r.kind}:${r.agent}`).sort()).toEqual([
      "attempt:bot",
      "attempt:helper",
      "outcome:bot",
      "outcome:helper",
    ]);
    // Another run, another trace.
    const other = await g.runAs(alice, { agent: "bot" }, async () => currentRun().traceId);
    expect(other).not.toBe(outer);
  });

  it("takes the active OpenTelemetry span's trace id", async () => {
    gov = await tiered();
    const g = gov;
    // A stand-in for an OpenTelemetry SDK's context manager (its package needs a newer Node than this one).
    const storage = new AsyncLocalStorage<Context>();
    const manager: ContextManager = {
      active: () => storage.getStore() ?? ROOT_CONTEXT,
      with: (ctx, fn, thisArg, ...args) => storage.run(ctx, () => fn.call(thisArg, ...args)),
      bind: (_ctx, target) => target,
      enable() {
        return this;
      },
      disable() {
        return this;
      },
    };
    context.setGlobalContextManager(manager);
    try {
      const span = trace.wrapSpanContext({
        traceId: "5b8efff798038103d269b633813fc60c",
        spanId: "eee19b7ec3c1b174",
        traceFlags: TraceFlags.SAMPLED,
      });
      const id = await context.with(trace.setSpan(context.active(), span), () =>
        g.runAs(alice, { agent: "bot" }, async () => currentRun().traceId),
      );
      expect(id).toBe("5b8efff798038103d269b633813fc60c");
      // A given trace id wins over the span's.
      const given = await context.with(trace.setSpan(context.active(), span), () =>
        g.runAs(alice, { agent: "bot", traceId: "given-1" }, async () => currentRun().traceId),
      );
      expect(given).toBe("given-1");
    } finally {
      context.disable();
    }
  });
});
