/**
 * The Python client's unittest suite (clients/python/tests), run against a real control plane started here:
 * `startServer` with the development issuer, SQLite audit, and tokens minted for a few humans in three tenants
 * (acme: fail_closed; openco: fail_open; plainco: outputs not transformed but get_customer's, test_connections.py). The URL, the admin token and the tokens reach Python through
 * environment variables; the suite runs as a child process (asynchronously, so this process keeps serving).
 *
 * The suite runs twice: once with no AutoGen installed (the client is standard library only; the AutoGen tests
 * skip), and once, for the tests that need it, with the real AutoGen 0.7.5 of ../shared/vendor/python-autogen on the
 * PYTHONPATH — those include examples/autogen/team.py, run against a second control plane that uses the example's
 * own config (examples/autogen/onbehalf.yaml).
 */

import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REASON_CODES } from "../../src/decision.js";
import { mintDevToken } from "../../src/identity/dev-issuer.js";
import { loadOrCreateSigningKey } from "../../src/identity/keys.js";
import { type OnbehalfServer, startServer } from "../../src/server/app.js";
import { findShared } from "../support/testdata.js";

const ROOT = resolve(import.meta.dirname, "../..");
const ADMIN = "admin-token-for-python-tests-0123456789";
/** The secret of acme's registered client py-runtime (test_client.py ClientAuthenticationTests). */
const CLIENT_SECRET = randomBytes(32).toString("base64url");
const ALLOW_REDACT = { "*": { permission: "allow" as const, post_transform: "redact" as const } };

/** Humans the Python tests act for: [sub, tenant, scopes]. */
const USERS: ReadonlyArray<readonly [string, string, readonly string[]]> = [
  ["alice", "acme", ["customers:read", "orders:write", "email.read"]],
  ["bob", "acme", ["customers:read", "orders:write", "email.read"]],
  ["carol", "acme", ["customers:read", "orders:write", "email.read"]],
  ["dave", "acme", ["customers:read"]],
  ["erin", "openco", ["customers:read", "orders:write", "email.read"]],
  ["frank", "openco", ["customers:read", "orders:write", "email.read"]],
  ["gina", "openco", ["customers:read", "orders:write", "email.read"]],
  ["hank", "openco", ["customers:read", "orders:write", "email.read"]],
  ["ivan", "openco", ["customers:read", "orders:write", "email.read"]],
  ["pat", "plainco", ["customers:read", "orders:write", "email.read"]],
];

let dir: string;
let server: OnbehalfServer;
const tokens: Record<string, string> = {};
/** The control plane of examples/autogen/onbehalf.yaml (a copy, in a directory of its own), and alice's token. */
let exampleDir: string;
let example: OnbehalfServer;
let exampleToken: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "onbehalf-python-"));
  const config = {
    server: { port: 0, admin_tokens: [ADMIN], signing_key: "./server.jwk" },
    dev_issuer: true,
    tools: [
      { name: "get_customer", required_scopes: ["customers:read"], redact: ["ssn", "cards[*].number"] },
      { name: "issue_refund", required_scopes: ["orders:write"] },
      { name: "read_email", required_scopes: ["email.read"] },
      { name: "lookup_order" },
      { name: "export_all" },
      { name: "delete_account" },
      { name: "transfer_to_billing" },
      { name: "transfer_to_specialist" },
      { name: "transfer_to_triage" },
      { name: "transfer_to_intruder" },
      { name: "transfer_to_auditor", required_scopes: ["audit:read"] }, // nobody holds it: refused, missing_scope
      // test_client.py TierTests: sub-agents may not wire money; interactive and background runs may
      { name: "wire_money" },
      // test_redaction.py: outputs as strings, reprs and prose; one tool lets what it cannot check through
      { name: "get_customer_since", redact: ["ssn", "cards[*].number"] },
      { name: "get_customer_text", redact: ["ssn", "cards[*].number"] },
      { name: "get_customer_json", redact: ["ssn", "cards[*].number"] },
      { name: "customer_notes", redact: ["ssn", "cards[*].number"], unparsed_output: "pass" },
      { name: "get_customer_model", redact: ["ssn", "cards[*].number"] },
      { name: "get_status", required_scopes: ["customers:read"] }, // test_connections.py
    ],
    tenants: [
      {
        id: "acme",
        // test_client.py ClientAuthenticationTests: an agent runtime registered as an OAuth client
        clients: [
          {
            client_id: "py-runtime",
            auth: "client_secret_basic",
            secret_sha256: createHash("sha256").update(CLIENT_SECRET).digest("hex"),
            agents: ["planner", "researcher"],
          },
        ],
        policy: {
          fail_mode: "fail_closed",
          defaults: ALLOW_REDACT,
          tools: {
            export_all: { "*": { permission: "allow", post_transform: "block" } },
            delete_account: { "*": { permission: "deny" } },
            transfer_to_intruder: { "*": { permission: "deny" } },
            wire_money: { subagent: { permission: "deny" }, "*": { permission: "allow" } },
          },
          rules: [
            {
              id: "big-refunds",
              tools: ["issue_refund"],
              when: "args.amount > 500",
              effect: "ask",
              reason: "refunds over 500 need a manager",
            },
          ],
        },
      },
      { id: "openco", policy: { fail_mode: "fail_open", defaults: ALLOW_REDACT } },
      // test_connections.py: outputs no policy transforms (post_transform audit, the default) but get_customer's
      {
        id: "plainco",
        policy: {
          fail_mode: "fail_closed",
          defaults: { "*": { permission: "allow" } },
          tools: { get_customer: { "*": { permission: "allow", post_transform: "redact" } } },
        },
      },
    ],
    audit: { store: "sqlite:./audit.db", signing_key: "./audit.jwk", flush_ms: 1 },
  };
  const file = join(dir, "onbehalf.json");
  writeFileSync(file, JSON.stringify(config));
  mkdirSync(join(dir, "keys"), { recursive: true });
  server = await startServer({
    config: file,
    warn: () => {},
    log: { level: "silent" },
    approvalTtlSeconds: 4,
  });
  const devKey = loadOrCreateSigningKey(join(dir, "keys", "dev-issuer.jwk")); // the key the server trusts
  for (const [sub, tenant, scopes] of USERS) {
    tokens[sub] = mintDevToken(devKey, {
      sub,
      tenant,
      scopes,
      email: `${sub}@${tenant}.test`,
      ttlSeconds: 3600,
    });
  }
});

beforeAll(async () => {
  exampleDir = mkdtempSync(join(tmpdir(), "onbehalf-python-example-"));
  const config = join(exampleDir, "onbehalf.yaml");
  copyFileSync(resolve(ROOT, "examples/autogen/onbehalf.yaml"), config);
  example = await startServer({
    config,
    port: 0,
    env: { ...process.env, ONBEHALF_ADMIN_TOKEN: ADMIN },
    warn: () => {},
    log: { level: "silent" },
  });
  const devKey = loadOrCreateSigningKey(join(exampleDir, "keys", "dev-issuer.jwk"));
  exampleToken = mintDevToken(devKey, {
    sub: "alice",
    tenant: "acme",
    scopes: ["orders:read", "refunds:write", "customers:read"], // as in examples/autogen/README.md
    email: "alice@acme.test",
    ttlSeconds: 3600,
  });
});

afterAll(async () => {
  await server?.close();
  await example?.close();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  if (exampleDir !== undefined) rmSync(exampleDir, { recursive: true, force: true });
});

function run(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number | null; output: string }> {
  return new Promise((done, fail) => {
    const child = spawn(cmd, args, { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (b: Buffer) => {
      output += b.toString();
    });
    child.stderr.on("data", (b: Buffer) => {
      output += b.toString();
    });
    child.on("error", (e) => fail(new Error(`cannot run ${cmd}: ${e.message} (is Python 3.10+ installed?)`)));
    child.on("close", (code) => done({ code, output }));
  });
}

/** The environment the Python suite runs in: the control plane's address, the admin token and the tokens. */
function pythonEnv(pythonPath: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    PYTHONPATH: pythonPath,
    PYTHONDONTWRITEBYTECODE: "1",
    PYTHONUNBUFFERED: "1",
    ONBEHALF_TEST_URL: server.url,
    ONBEHALF_TEST_ADMIN: ADMIN,
    ONBEHALF_TEST_TOKENS: JSON.stringify(tokens),
    ONBEHALF_TEST_CLIENT_SECRET: CLIENT_SECRET,
    ONBEHALF_TEST_APPROVAL_TTL: "4",
    ONBEHALF_TEST_EXAMPLE_URL: example.url,
    ONBEHALF_TEST_EXAMPLE_TOKEN: exampleToken,
    ...extra,
  };
}

/**
 * The real AutoGen 0.7.5 for tests (../shared/vendor/python-autogen, see its README), when this machine has it:
 * found as the shared test vectors are, so a clone made elsewhere (a CI checkout in a temporary folder) runs
 * these tests too, and fails rather than skipping them where it is missing.
 */
const AUTOGEN_PATH_SCRIPT = findShared("vendor/python-autogen/pythonpath.sh");
/** The tests that need the real AutoGen (or the OpenTelemetry API it brings), run in the second process. */
const AUTOGEN_TESTS = [
  "test_autogen",
  "test_redaction.RealAutogenRedactionTests",
  "test_example_team",
  "test_client.OpenTelemetryTests",
];

describe("Python client (clients/python)", () => {
  it("knows the control plane's deny codes: its copy is the server's list but ok and fail_open", () => {
    const source = readFileSync(resolve(ROOT, "clients/python/onbehalf/decisions.py"), "utf8");
    const block = /_SERVER_DENY_CODES = frozenset\(\s*\{([^}]*)\}/.exec(source)?.[1] ?? "";
    const copied = [...block.matchAll(/"([a-z_]+)"/g)].map((m) => m[1]);
    expect(copied.sort()).toEqual(REASON_CODES.filter((c) => c !== "ok" && c !== "fail_open").sort());
  });

  it("passes its unittest suite against a real control plane", async () => {
    const python = process.env["ONBEHALF_TEST_PYTHON"] ?? "python3";
    const { code, output } = await run(
      python,
      ["-m", "unittest", "discover", "-s", "clients/python/tests", "-v"],
      pythonEnv("clients/python"),
    );
    if (code !== 0) console.log(output);
    expect(code, output.slice(-20_000)).toBe(0);
    const summary = output.match(/^Ran \d+ tests? in [\d.]+s\s+OK.*$/m);
    console.log(`python: ${summary === null ? "no summary" : summary[0].replace(/\s+/g, " ")}`);
    expect(output).not.toContain("skipped 'run through npm test"); // the server tests saw the control plane
  }, 180_000);

  it("governs real AutoGen 0.7.5 teams, tools, hand-offs and the example team (test_autogen.py, ...)", async () => {
    // Never skipped: without the vendored AutoGen this fails, and says where it was looked for.
    expect(
      AUTOGEN_PATH_SCRIPT,
      "../shared/vendor/python-autogen/pythonpath.sh, beside the checkout",
    ).toBeDefined();
    const path = await run("bash", [AUTOGEN_PATH_SCRIPT!], process.env);
    expect(path.code, path.output).toBe(0);
    const autogen = path.output.trim().split("\n").at(-1) ?? "";
    const python = process.env["ONBEHALF_TEST_PYTHON"] ?? "python3";
    const { code, output } = await run(
      python,
      ["-m", "unittest", "-v", ...AUTOGEN_TESTS],
      pythonEnv(["clients/python", "clients/python/tests", autogen].join(":"), {
        ONBEHALF_TEST_REAL_AUTOGEN: "1",
      }),
    );
    if (code !== 0) console.log(output);
    expect(code, output.slice(-20_000)).toBe(0);
    expect(output).not.toMatch(/skipped/);
    expect(output).toMatch(/^Ran [1-9]\d* tests? in/m);
    const summary = output.match(/^Ran \d+ tests? in [\d.]+s\s+OK.*$/m);
    console.log(`python, real AutoGen: ${summary === null ? "no summary" : summary[0].replace(/\s+/g, " ")}`);
  }, 180_000);
});
