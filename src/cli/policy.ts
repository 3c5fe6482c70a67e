/**
 * `onbehalf policy validate F | test F | explain …`: check a config, run policy test cases against it, and
 * show how one call would be decided.
 */
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { parse as parseYaml, YAMLError } from "yaml";
import { z } from "zod";
import { digestArgs } from "../audit/record.js";
import { CAPABILITIES_TYPE, type CapabilityLayer, type CapabilitySetInput } from "../config/capabilities.js";
import { formatIssue } from "../config/issues.js";
import { Tier } from "../config/policy.js";
import { REASON_CODES } from "../decision.js";
import { type LoadedConfig, loadConfigFile } from "../govern/config.js";
import { checkedLayer } from "../policy/capabilities.js";
import { decide } from "../policy/decide.js";
import { explain, formatExplanation } from "../policy/explain.js";
import { hypotheticalInput } from "../policy/hypothetical.js";
import {
  type Command,
  configPath,
  EXIT_FINDING,
  EXIT_OK,
  type Io,
  json,
  list,
  type ParsedArgs,
  text,
  UsageError,
} from "./args.js";

export const policyValidate: Command = {
  name: "policy validate",
  operands: ["[FILE]"],
  summary: "check a config (FILE, else --config): each error with line and fix; exit 1",
  flags: {},
  run({ values, positionals }, io) {
    const file = positionals[0] ?? configPath(values.config);
    const loaded = loadConfigFile(file);
    for (const w of loaded.warnings) io.err(`warning: ${formatIssue(w)}`);
    const rules = loaded.config.tenants.reduce((n, t) => n + t.policy.rules.length, 0);
    io.out(
      `${file}: OK (${loaded.config.tools.length} tools, ${loaded.config.tenants.length} tenants, ${rules} rules, ${loaded.config.issuers.length + (loaded.config.dev_issuer ? 1 : 0)} issuers)`,
    );
    return EXIT_OK;
  },
};

const TestCase = z.strictObject({
  name: z.string().min(1),
  user: z.string().min(1),
  tenant: z.string().optional(),
  token_tenant: z.string().nullable().optional(),
  /** The issuer of the (hypothetical) token. Default: one that may vouch for its tenant. */
  issuer: z.string().optional(),
  scopes: z.array(z.string()).default([]),
  roles: z.array(z.string()).default([]),
  email: z.string().optional(),
  tool: z.string().min(1),
  tier: Tier.default("interactive"),
  agent: z.string().optional(),
  chain: z.array(z.string()).optional(),
  args: z.unknown().optional(),
  expect: z.enum(["allow", "deny", "ask"]),
  reason_code: z.enum(REASON_CODES).optional(),
  rule: z.string().optional(),
});
const TestFile = z.strictObject({ config: z.string().optional(), cases: z.array(TestCase).min(1) });

export const policyTest: Command = {
  name: "policy test",
  operands: ["FILE"],
  summary: "run the policy test cases in FILE (docs/policy.md); exit 1 on a failure",
  flags: {},
  notes: "The config is --config, else the one FILE names (`config:`), else ./onbehalf.yaml.",
  run: runTests,
};

function runTests({ values, positionals }: ParsedArgs, io: Io): number {
  const file = positionals[0]!;
  let raw: unknown;
  try {
    raw = parseYaml(readFileSync(file, "utf8"));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== undefined && !(e instanceof YAMLError)) throw e;
    io.err(`${file}: ${(e as Error).message}`);
    return EXIT_FINDING;
  }
  const parsed = TestFile.safeParse(raw);
  if (!parsed.success) {
    for (const i of parsed.error.issues) io.err(`${file}: ${i.path.join(".")}: ${i.message}`);
    return EXIT_FINDING;
  }
  const config =
    typeof values.config === "string"
      ? values.config
      : parsed.data.config !== undefined
        ? resolve(dirname(file), parsed.data.config)
        : configPath(undefined);
  const { policy } = loadConfigFile(config);
  let failed = 0;
  for (const c of parsed.data.cases) {
    const args = c.args ?? {};
    const input = hypotheticalInput(
      {
        user: c.user,
        tenant: c.token_tenant === undefined ? (c.tenant ?? null) : c.token_tenant,
        requestedTenant: c.token_tenant === undefined ? undefined : c.tenant,
        scopes: c.scopes,
        roles: c.roles,
        email: c.email ?? null,
        tool: c.tool,
        tier: c.tier,
        chain: c.chain ?? [c.agent ?? "agent"],
        args,
        argsBytes: digestArgs(args).bytes,
        issuer: c.issuer,
      },
      policy,
    );
    const d = decide(policy, input);
    const problems: string[] = [];
    if (d.decision !== c.expect) problems.push(`expected ${c.expect}, got ${d.decision}`);
    if (c.reason_code !== undefined && d.reason_code !== c.reason_code) {
      problems.push(`expected reason ${c.reason_code}, got ${d.reason_code}`);
    }
    if (c.rule !== undefined && d.rule !== c.rule)
      problems.push(`expected rule ${c.rule}, got ${d.rule ?? "none"}`);
    if (problems.length === 0) io.out(`PASS  ${c.name}`);
    else {
      failed++;
      io.out(`FAIL  ${c.name}: ${problems.join("; ")} (${d.reason})`);
    }
  }
  io.out(`${parsed.data.cases.length - failed} passed, ${failed} failed`);
  return failed === 0 ? EXIT_OK : EXIT_FINDING;
}

export const policyExplain: Command = {
  name: "policy explain",
  summary: "how one call would be decided, step by step; exit 1 unless allowed",
  flags: {
    user: text("U", "the user making the call", { required: true }),
    tool: text("T", "the tool called", { required: true }),
    tenant: text("T", "the user's tenant (default: the config's first)"),
    tier: text("TIER", `the tier: ${Tier.options.join(", ")}`, { default: "interactive" }),
    scopes: text('"a b"', "the scopes the user's token holds"),
    roles: text('"r"', "the user's roles"),
    args: text("JSON", "the call's arguments"),
    chain: text('"a,b:subagent"', "the agents the call went through, outermost first"),
    issuer: text("ISS", "the token's issuer (default: one the tenant trusts)"),
    capabilities: text(
      "JSON",
      "the run's task capabilities: a set {tools, data}, or a list of them (one per hop, outermost first)",
    ),
    json: { type: "boolean", default: false, help: "print the explanation as JSON" },
  },
  notes:
    "A chain element AGENT:TIER names that hop's tier (default: --tier); the call is decided under each. " +
    "Capability sets go to the chain's hops from the innermost outwards (docs/capabilities.md).",
  run: explainCommand,
};

function explainCommand({ values }: ParsedArgs, io: Io): number {
  const loaded: LoadedConfig = loadConfigFile(configPath(values.config));
  const tier = Tier.safeParse(values.tier);
  if (!tier.success) throw new UsageError(`--tier must be one of ${Tier.options.join(", ")}`);
  const chain = list(values.chain);
  const args = json(values.args, "args") ?? {};
  let input = hypotheticalInput(
    {
      user: String(values.user),
      tenant: typeof values.tenant === "string" ? values.tenant : (loaded.config.tenants[0]?.id ?? null),
      requestedTenant: undefined,
      scopes: list(values.scopes),
      roles: list(values.roles),
      email: null,
      tool: String(values.tool),
      tier: tier.data,
      chain: chain.length > 0 ? chain : ["agent"],
      args,
      argsBytes: digestArgs(args).bytes,
      issuer: typeof values.issuer === "string" ? values.issuer : undefined,
    },
    loaded.policy,
  );
  const capabilities = capabilitiesOf(json(values.capabilities, "capabilities"), input.chain);
  if (capabilities.length > 0) input = { ...input, capabilities };
  const explanation = explain(loaded.policy, input);
  if (values.json) io.out(JSON.stringify(explanation, (k, v) => (k === "buckets" ? undefined : v), 2));
  else io.out(formatExplanation(input, explanation));
  return explanation.decision.decision === "allow" ? EXIT_OK : EXIT_FINDING;
}

/**
 * The layers of `--capabilities`: one set, or a list of sets (an `authorization_details` array's entries of
 * ours included); the last set is the innermost hop's, the ones before it belong to the hops before.
 */
function capabilitiesOf(value: unknown, chain: readonly string[]): CapabilityLayer[] {
  if (value === undefined) return [];
  const sets = Array.isArray(value) ? value : [value];
  return sets.map((set, i) => {
    const agent = chain[Math.max(0, chain.length - sets.length + i)] ?? "agent";
    const { type, agent: _signed, ...rest } = (set ?? {}) as Record<string, unknown>;
    if (type !== undefined && type !== CAPABILITIES_TYPE) {
      throw new UsageError(
        `--capabilities: an entry of type ${JSON.stringify(type)} is not ${CAPABILITIES_TYPE}`,
      );
    }
    return checkedLayer(agent, rest as CapabilitySetInput);
  });
}
