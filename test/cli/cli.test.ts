import { execFile } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { flagsOf, parse } from "../../src/cli/args.js";
import { COMMANDS, main } from "../../src/cli/commands.js";

/** Run the CLI in-process, capturing what it prints. */
async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, { out: (l) => out.push(l), err: (l) => err.push(l) });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

/** A copy of the example config in a temp dir, so keys and the audit database land there. */
function exampleConfig(): string {
  const dir = mkdtempSync(join(tmpdir(), "onbehalf-cli-"));
  copyFileSync("examples/onbehalf.yaml", join(dir, "onbehalf.yaml"));
  copyFileSync("examples/policy-tests.yaml", join(dir, "policy-tests.yaml"));
  return join(dir, "onbehalf.yaml");
}

describe("onbehalf CLI", () => {
  it("validates a good config (exit 0) and reports every error of a bad one with line and fix (exit 1)", async () => {
    expect(await cli("policy", "validate", "examples/onbehalf.yaml")).toMatchObject({ code: 0 });
    const dir = mkdtempSync(join(tmpdir(), "onbehalf-cli-"));
    const bad = join(dir, "bad.yaml");
    writeFileSync(
      bad,
      "tools:\n  - name: t\n    required_scope: [a]\ntenants:\n  - id: a\n    policy: { defaults: { interactiv: {} } }\n",
    );
    const r = await cli("policy", "validate", bad);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`${bad}:3:5: tools[0].required_scope: unknown field "required_scope"`);
    expect(r.err).toContain('unknown tier "interactiv"');
  });

  it("runs policy tests: passes the example suite, fails (exit 1) on a wrong expectation", async () => {
    const config = exampleConfig();
    const ok = await cli("policy", "test", join(config, "../policy-tests.yaml"));
    expect(ok.code).toBe(0);
    expect(ok.out).toContain("9 passed, 0 failed");
    const wrong = join(config, "../wrong.yaml");
    writeFileSync(
      wrong,
      "config: onbehalf.yaml\ncases:\n  - { name: x, user: alice, tenant: acme, scopes: [], tool: get_customer, expect: allow }\n",
    );
    const failed = await cli("policy", "test", wrong);
    expect(failed.code).toBe(1);
    expect(failed.out).toContain("FAIL  x: expected allow, got deny");
  });

  it("says which file it cannot read or parse, in one line, without a stack trace", async () => {
    const missing = await cli("policy", "test", "no/such/tests.yaml");
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/^onbehalf: cannot use no\/such\/tests\.yaml: ENOENT/);
    const broken = join(mkdtempSync(join(tmpdir(), "onbehalf-cli-")), "broken.yaml");
    writeFileSync(broken, "cases:\n  - { name: x\n");
    const parsed = await cli("policy", "test", broken);
    expect(parsed.code).toBe(1);
    expect(parsed.err).toContain(`${broken}: `);
    expect(parsed.err).not.toContain("    at ");
  });

  it("explains which layer and rule decided", async () => {
    const r = await cli(
      "policy",
      "explain",
      "--config",
      "examples/onbehalf.yaml",
      "--user",
      "bob",
      "--tool",
      "grant_permission",
      "--scopes",
      "admin",
    );
    expect(r.code).toBe(0);
    expect(r.out).toContain("decided by user_tools.bob.grant_permission.interactive");
    const json = await cli(
      "policy",
      "explain",
      "--config",
      "examples/onbehalf.yaml",
      "--user",
      "alice",
      "--tool",
      "issue_refund",
      "--scopes",
      "refunds:write",
      "--args",
      '{"amount": 900}',
      "--json",
    );
    expect(json.code).toBe(1);
    expect(JSON.parse(json.out).decision).toMatchObject({
      decision: "ask",
      rule: "big-refunds-need-approval",
    });
    // A chain whose hops are in several tiers: each tier's verdict, and the strictest wins.
    const chained = await cli(
      "policy",
      "explain",
      "--config",
      "examples/onbehalf.yaml",
      "--user",
      "alice",
      "--tool",
      "get_customer",
      "--scopes",
      "customers:read",
      "--chain",
      "orchestrator,worker:subagent,batch:background",
    );
    expect(chained.code).toBe(1);
    expect(chained.out).toContain(
      "chain orchestrator (interactive) → worker (subagent) → batch (background)",
    );
    expect(chained.out).toMatch(
      /tier {9}interactive\n.*\n {2}verdict {6}allow: allowed by defaults\.interactive/,
    );
    expect(chained.out).toMatch(
      /tier {9}background\n.*\n {2}verdict {6}deny: denied by defaults\.background/,
    );
    expect(chained.out).toContain("result: deny (permission_deny) by defaults.background");
  });

  it("explains a call under task capabilities: which layer refused it, and why", async () => {
    const caps = JSON.stringify({
      tools: [
        "get_customer",
        { tool: "issue_refund", when: "args.order in task.orders && args.amount <= 50" },
      ],
      data: { orders: ["o-1"] },
    });
    const base = ["policy", "explain", "--config", "examples/onbehalf.yaml", "--user", "alice"];
    const refund = [...base, "--tool", "issue_refund", "--scopes", "refunds:write", "--chain", "refund-bot"];
    const outside = await cli(...refund, "--args", '{"order": "o-2", "amount": 40}', "--capabilities", caps);
    expect(outside.code).toBe(1);
    expect(outside.out).toContain(
      'capabilities of refund-bot: get_customer; issue_refund if args.order in task.orders && args.amount <= 50, task {"orders":["o-1"]}',
    );
    expect(outside.out).toContain("capabilities refund-bot: condition false");
    expect(outside.out).toContain(
      "result: deny (capability_deny): the arguments of issue_refund are outside",
    );
    const inside = await cli(...refund, "--args", '{"order": "o-1", "amount": 40}', "--capabilities", caps);
    expect(inside.code).toBe(0);
    expect(inside.out).toContain("capabilities refund-bot: granted");
    // two layers: the outer hop's set holds too, whatever the inner one grants
    const layered = await cli(
      ...base,
      "--tool",
      "read_email",
      "--scopes",
      "email.read",
      "--chain",
      "planner,helper",
      "--capabilities",
      JSON.stringify([{ tools: ["get_customer"] }, { tools: ["read_email"] }]),
    );
    expect(layered.code).toBe(1);
    expect(layered.out).toContain(
      "result: deny (capability_deny): read_email is not among the capabilities of planner (layer 1 of 2)",
    );
    const typo = await cli(
      ...refund,
      "--capabilities",
      '{"tools": [{"tool": "issue_refund", "when": "taks.x"}]}',
    );
    expect(typo.code).not.toBe(0);
    expect(typo.err).toMatch(/unknown variable "taks"/);
  });

  it("mints a development token that verifies, and refuses to mint without dev_issuer", async () => {
    const config = exampleConfig();
    const minted = await cli(
      "dev-token",
      "--config",
      config,
      "--sub",
      "alice",
      "--tenant",
      "acme",
      "--scopes",
      "customers:read",
    );
    expect(minted.code).toBe(0);
    const verified = await cli("token", "verify", "--config", config, minted.out.trim());
    expect(verified.code).toBe(0);
    expect(JSON.parse(verified.out)).toMatchObject({
      user: "alice",
      tenant: "acme",
      scopes: ["customers:read"],
    });
    const tampered = await cli(
      "token",
      "verify",
      "--config",
      config,
      `${minted.out.trim().slice(0, -4)}AAAA`,
    );
    expect(tampered.code).toBe(1);
    expect(tampered.out).toMatch(/^invalid: ERR_TOKEN_/);

    const noDev = join(config, "../nodev.yaml");
    writeFileSync(noDev, "dev_issuer: false\n");
    const refused = await cli("dev-token", "--config", noDev, "--sub", "a", "--tenant", "t");
    expect(refused.code).toBe(1);
    expect(refused.err).toContain("dev_issuer: true");
  });

  it("inspects a token without verifying it, and says so", async () => {
    const config = exampleConfig();
    const minted = await cli("dev-token", "--config", config, "--sub", "carol", "--tenant", "acme");
    const r = await cli("token", "inspect", minted.out.trim());
    expect(JSON.parse(r.out).payload.sub).toBe("carol");
    expect(r.err).toContain("NOT verified");
  });

  it("runs the demo end to end on the example config", async () => {
    const r = await cli("demo", "--config", exampleConfig());
    expect(r.code).toBe(0);
    expect(r.out).toContain('"ssn":"[REDACTED]"');
    expect(r.out).toMatch(/ask +issue_refund 900/);
    expect(r.out).toMatch(/deny +grant_permission \(needs the admin scope\) → missing_scope/);
    expect(r.out).toContain("alice support-bot>billing-specialist get_customer deny/missing_scope");
  });

  it("exits 2 on bad usage", async () => {
    expect((await cli("bogus")).code).toBe(2);
    expect((await cli("policy", "explain", "--config", "examples/onbehalf.yaml", "--tool", "x")).code).toBe(
      2,
    );
    expect((await cli("dev-token", "--nope")).code).toBe(2);
    expect((await cli()).code).toBe(2);
  });
});

describe("onbehalf --help and --version", () => {
  const version = JSON.parse(readFileSync("package.json", "utf8")).version as string;

  for (const command of COMMANDS) {
    const words = command.name.split(" ");

    it(`${command.name} --help prints its own usage, every option it takes, and exits 0`, async () => {
      const r = await cli(...words, "--help");
      expect(r).toMatchObject({ code: 0, err: "" });
      expect(r.out.startsWith(`usage: onbehalf ${command.name}`)).toBe(true);
      for (const flag of Object.keys(flagsOf(command))) expect(r.out).toContain(`--${flag}`);
      expect(await cli(...words, "-h")).toEqual(r);
    });

    it(`${command.name}: the usage lists exactly the options the parser accepts`, async () => {
      const help = (await cli(...words, "--help")).out;
      const listed = new Set([...help.matchAll(/--([a-z][a-z-]*)/g)].map((m) => m[1]!));
      for (const flag of listed) {
        // With --help, the parser checks only that each flag is known.
        const value = flagsOf(command)[flag]?.type === "string" ? ["x"] : [];
        expect(() => parse([`--${flag}`, ...value, "--help"], command), `--${flag}`).not.toThrow();
      }
      expect([...listed].sort()).toEqual(Object.keys(flagsOf(command)).sort());
    });

    it(`${command.name}: an unknown option is one line on stderr pointing at its --help, exit 2`, async () => {
      const r = await cli(...words, "--no-such-option");
      expect(r).toEqual({
        code: 2,
        out: "",
        err: `onbehalf: unknown option "--no-such-option" (see onbehalf ${command.name} --help)`,
      });
    });
  }

  it("lists every command in the overview, and each group's subcommands in the group's", async () => {
    const r = await cli("--help");
    expect(r.code).toBe(0);
    for (const c of COMMANDS) expect(r.out).toContain(`  ${c.name}`);
    const audit = await cli("audit", "--help");
    expect(audit.code).toBe(0);
    for (const sub of ["query", "verify", "proof", "export", "key"])
      expect(audit.out).toContain(`audit ${sub}`);
    expect(audit.out).not.toContain("dev-token");
    expect((await cli("help", "audit", "verify")).out).toBe((await cli("audit", "verify", "--help")).out);
  });

  it("prints the version of package.json", async () => {
    expect(await cli("--version")).toEqual({ code: 0, out: version, err: "" });
    expect((await cli("-V")).out).toBe(version);
    // The bin itself, run from source: the version is found beside the module, not in the working directory.
    const root = join(import.meta.dirname, "../..");
    const tsx = pathToFileURL(createRequire(join(root, "package.json")).resolve("tsx")).href;
    const bin = await promisify(execFile)(
      process.execPath,
      ["--import", tsx, join(root, "src/cli/main.ts"), "--version"],
      { cwd: tmpdir() },
    );
    expect(bin.stdout).toBe(`${version}\n`);
  });

  it("says what is wrong with a command line in one line, never the whole help", async () => {
    const cases: [string[], string][] = [
      [["bogus"], 'onbehalf: unknown command "bogus" (see onbehalf --help)'],
      [
        ["audit"],
        "onbehalf: audit needs a subcommand: query, verify, proof, export, key (see onbehalf audit --help)",
      ],
      [["token", "nope"], 'onbehalf: unknown token subcommand "nope" (see onbehalf token --help)'],
      [["token", "inspect"], "onbehalf: token inspect needs JWT (see onbehalf token inspect --help)"],
      [
        ["dev-token", "--config", "examples/onbehalf.yaml"],
        "onbehalf: --sub is required (see onbehalf dev-token --help)",
      ],
      [["serve", "extra"], 'onbehalf: unexpected argument "extra" (see onbehalf serve --help)'],
      [
        ["serve", "--port", "x", "--config", "examples/onbehalf.yaml"],
        "onbehalf: --port must be 0 to 65535 (see onbehalf serve --help)",
      ],
    ];
    for (const [argv, line] of cases) expect(await cli(...argv)).toEqual({ code: 2, out: "", err: line });
  });
});
