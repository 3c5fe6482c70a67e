/**
 * `onbehalf demo`: the in-process tour. Two humans, tokens from the development issuer, a support bot with
 * governed tools, a delegation, and the audit trail that results. Everything real: tokens are signed and
 * verified, policy is the config's; the audit lands in a store of its own (`onbehalf-demo.db` beside the config),
 * so the demo can run next to a server on the same config.
 */

import { resolve } from "node:path";
import { OnbehalfError } from "../errors.js";
import { createGovernor, devKeyPath } from "../govern/bootstrap.js";
import { loadConfigFile } from "../govern/config.js";
import { mintDevToken } from "../identity/dev-issuer.js";
import { loadOrCreateSigningKey } from "../identity/keys.js";
import { type Command, configPath, EXIT_FINDING, EXIT_OK, type Io, type ParsedArgs } from "./args.js";

export const demo: Command = {
  name: "demo",
  summary: "the in-process tour, on a config with dev_issuer: true",
  flags: {},
  notes: `Two humans, signed development tokens, governed tools, a delegation, and the audit trail that results.
The audit goes to onbehalf-demo.db beside the config, so the demo can run next to \`onbehalf serve\`.`,
  run: demoCommand,
};

async function demoCommand({ values }: ParsedArgs, io: Io): Promise<number> {
  const file = configPath(values.config);
  const loaded = loadConfigFile(file);
  if (!loaded.config.dev_issuer) {
    io.err(
      `${file} does not enable dev_issuer; the demo mints its own tokens and needs it (examples/onbehalf.yaml has it)`,
    );
    return EXIT_FINDING;
  }
  // A store of its own, beside the config: the demo can run next to `onbehalf serve` on the same config.
  const store = resolve(loaded.baseDir, "onbehalf-demo.db");
  const gov = await createGovernor({
    config: { ...loaded.config, audit: { ...loaded.config.audit, store: `sqlite:${store}` } },
    baseDir: loaded.baseDir,
    warn: (m) => io.err(`warning: ${m}`),
  });
  const key = loadOrCreateSigningKey(devKeyPath(loaded));
  const tenant = loaded.config.tenants[0]?.id ?? "acme";
  const tokens = {
    alice: mintDevToken(key, {
      sub: "alice",
      tenant,
      scopes: ["customers:read", "refunds:write"],
      email: "alice@acme.example",
    }),
    bob: mintDevToken(key, {
      sub: "bob",
      tenant,
      scopes: ["customers:read", "admin"],
      email: "bob@acme.example",
    }),
  };

  const getCustomer = gov.governed({
    name: "get_customer",
    execute: async ({ id }: { id: string }) => ({
      id,
      name: "Ada Lovelace",
      ssn: "078-05-1120",
      cards: [{ number: "4111 1111 1111 1111", brand: "visa" }],
    }),
  });
  const issueRefund = gov.governed({
    name: "issue_refund",
    execute: async ({ order, amount }: { order: string; amount: number }) => ({ order, refunded: amount }),
  });
  const grantPermission = gov.governed({
    name: "grant_permission",
    execute: async ({ user, permission }: { user: string; permission: string }) => ({
      granted: `${permission} to ${user}`,
    }),
  });

  const attempt = async (label: string, call: () => Promise<unknown>) => {
    try {
      io.out(`  allow  ${label} → ${JSON.stringify(await call())}`);
    } catch (e) {
      if (!(e instanceof OnbehalfError)) throw e;
      const d = e.details as { reason_code?: string } | undefined;
      io.out(
        `  ${e.code === "ERR_APPROVAL_REQUIRED" ? "ask   " : "deny  "} ${label} → ${e.code === "ERR_APPROVAL_REQUIRED" ? `${d?.reason_code}: ` : ""}${e.message}`,
      );
    }
  };

  io.out(`onbehalf demo: config ${file}, tenant ${tenant}\n`);
  const alice = await gov.verify(`Bearer ${tokens.alice}`);
  io.out(`alice, through support-bot (scopes: ${alice.scopes.join(" ")}):`);
  await gov.runAs(alice, { agent: "support-bot", tier: "interactive" }, async () => {
    await attempt("get_customer c-1 (ssn and card numbers redacted)", () => getCustomer({ id: "c-1" }));
    await attempt("issue_refund 120", () => issueRefund({ order: "o-7", amount: 120 }));
    await attempt("issue_refund 900 (rule: over 500 needs approval)", () =>
      issueRefund({ order: "o-8", amount: 900 }),
    );
    await attempt("grant_permission (needs the admin scope)", () =>
      grantPermission({ user: "eve", permission: "admin" }),
    );
    await gov.delegate("billing-specialist", { scopes: ["refunds:write"], tier: "subagent" }, async () => {
      io.out("  …hands off to billing-specialist, limited to refunds:write:");
      await attempt("  get_customer c-1 from the specialist", () => getCustomer({ id: "c-1" }));
    });
  });

  const bob = await gov.verify(tokens.bob);
  io.out("\nbob, an admin, through support-bot:");
  await gov.runAs(bob, { agent: "support-bot", tier: "interactive" }, async () => {
    await attempt("grant_permission (user_tools lets bob)", () =>
      grantPermission({ user: "eve", permission: "reports" }),
    );
  });
  await gov.runAs(bob, { agent: "nightly-job", tier: "background" }, async () => {
    await attempt("get_customer from a background job (background is denied)", () =>
      getCustomer({ id: "c-2" }),
    );
  });

  await gov.flush();
  const { records } = await gov.queryAudit({ limit: 8 });
  io.out("\nthe audit trail (newest first; `kind` attempt = decision, outcome = what ran):");
  for (const r of records) {
    io.out(
      `  #${r.seq} ${r.user ?? "-"} ${r.chain.join(">")} ${r.tool} ${r.decision}/${r.reason_code} ${r.outcome} leaf ${r.leaf_hash.slice(0, 12)}…`,
    );
  }
  await gov.close();
  io.out(`
try it yourself:
  TOKEN=$(npx onbehalf dev-token --config ${file} --sub alice --tenant ${tenant} --scopes "customers:read")
  npx onbehalf token verify --config ${file} $TOKEN
  npx onbehalf policy explain --config ${file} --user alice --tool issue_refund --scopes "refunds:write" --args '{"amount": 900}'`);
  return EXIT_OK;
}
