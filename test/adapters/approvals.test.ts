/**
 * Approvals on the path every adapter takes (`governCall`): a used approval does not block the next call with the
 * same arguments, an outage does not burn a human's approval, and an attempt decided for some arguments is
 * never reused for others.
 */
import { afterEach, describe, expect, it } from "vitest";
import { governCall } from "../../src/adapters/common.js";
import { openSqliteStore } from "../../src/audit/sqlite.js";
import type { AuditStore } from "../../src/audit/store.js";
import { runContextOf } from "../../src/context/run.js";
import type { Governor } from "../../src/govern/governor.js";
import { testGovernor } from "../support/governor.js";
import { alice, auditOf } from "./support.js";

let gov: Governor | undefined;
afterEach(async () => {
  await gov?.close();
  gov = undefined;
});

const run = runContextOf(alice, { chain: ["billing"], tier: "interactive" });
const options = { asError: (text: string) => ({ refused: text }) };

function refunds() {
  const ran: number[] = [];
  const refund = (g: Governor, args: { amount: number }) =>
    governCall(g, run, "issue_refund", args, () => ran.push(args.amount), options, undefined);
  return { ran, refund };
}

async function approveNewest(g: Governor): Promise<string> {
  const [pending] = await g.approvals.list("pending");
  expect(pending).toBeDefined();
  await g.approvals.decide(pending!.id, { id: "mona" }, "approve");
  return pending!.id;
}

describe("approvals through governCall", () => {
  it("lets an approval through once; the same call later asks anew instead of being refused forever", async () => {
    gov = (await testGovernor()).gov;
    const { ran, refund } = refunds();
    expect(await refund(gov, { amount: 900 })).toMatchObject({ refused: expect.stringMatching(/waiting/) });
    const first = await approveNewest(gov);
    await refund(gov, { amount: 900 });
    expect(ran).toEqual([900]);
    const again = (await refund(gov, { amount: 900 })) as { refused: string };
    expect(ran).toEqual([900]);
    expect(again.refused).toMatch(/waiting for a human to approve \(approval apr_/);
    expect(again.refused).not.toContain(first);
    const second = await approveNewest(gov);
    expect(second).not.toBe(first);
    await refund(gov, { amount: 900 });
    expect(ran).toEqual([900, 900]);
  });

  it("keeps a denial for the call it answered: asked again with the same arguments, it stays denied", async () => {
    gov = (await testGovernor()).gov;
    const { ran, refund } = refunds();
    await refund(gov, { amount: 900 });
    const [pending] = await gov.approvals.list("pending");
    await gov.approvals.decide(pending!.id, { id: "mona" }, "deny", "not this one");
    // The same attempt (a framework resuming its run) reads the denial ...
    const attempt = await gov.begin(run, "issue_refund", { amount: 900 }, { callId: pending!.call_id });
    const denied = (await governCall(
      gov,
      run,
      "issue_refund",
      { amount: 900 },
      () => ran.push(0),
      options,
      undefined,
      attempt,
    )) as { refused: string };
    expect(denied.refused).toMatch(/denied by mona: not this one/);
    expect(ran).toEqual([]);
  });

  it("gives an approval back when the call could not run for an outage, and revokes it for a policy denial", async () => {
    const real = openSqliteStore(":memory:");
    let down = false;
    // A fault injector around the real store: a stand-in for a database that went away.
    const flaky: AuditStore = {
      ...real,
      append: (b, holder) => (down ? Promise.reject(new Error("disk I/O error")) : real.append(b, holder)),
    };
    gov = (await testGovernor({}, { auditStore: flaky })).gov;
    const { ran, refund } = refunds();
    await refund(gov, { amount: 900 });
    const id = await approveNewest(gov);
    down = true;
    await refund(gov, { amount: 10 }); // the write that finds the store down
    await new Promise((r) => setTimeout(r, 20));
    expect(gov.auditLog.healthy).toBe(false);
    const during = (await refund(gov, { amount: 900 })) as { refused: string };
    expect(during.refused).toMatch(/audit store is unavailable/);
    expect(ran).toEqual([10]);
    expect((await gov.approvals.get(id))?.status).toBe("approved"); // not lost to the outage
    down = false;
    await gov.flush();
    await refund(gov, { amount: 900 });
    expect(ran).toEqual([10, 900]);
    expect((await gov.approvals.get(id))?.status).toBe("used");

    // A policy that now denies the call revokes the approval it would have used (the attempt that asked is
    // resumed, as a framework does after its pause).
    const asked = await gov.begin(run, "issue_refund", { amount: 901 });
    await gov.approvals.open(asked, { amount: 901 });
    const other = await approveNewest(gov);
    gov.declare({ name: "issue_refund", required_scopes: ["refunds:admin"] });
    const refused = (await governCall(
      gov,
      run,
      "issue_refund",
      { amount: 901 },
      () => ran.push(901),
      options,
      undefined,
      asked,
    )) as { refused: string };
    expect(refused.refused).toMatch(/refunds:admin/);
    expect((await gov.approvals.get(other))?.status).toBe("revoked");
    expect(ran).toEqual([10, 900]);
    const revoked = (await auditOf(gov, "alice")).filter(
      (r) => r.kind === "approval" && r.reason.startsWith("revoked before the call ran"),
    );
    expect(revoked).toHaveLength(1);
  });

  it("decides anew an attempt reused for other arguments than it was decided for", async () => {
    gov = (await testGovernor()).gov;
    const { ran } = refunds();
    const small = await gov.begin(run, "issue_refund", { amount: 10 });
    expect(small.decision.decision).toBe("allow");
    const answer = await governCall(
      gov,
      run,
      "issue_refund",
      { amount: 5000 },
      () => ran.push(5000),
      options,
      undefined,
      small,
    );
    expect(ran).toEqual([]);
    expect(answer).toMatchObject({ refused: expect.stringMatching(/waiting for a human to approve/) });
  });
});
