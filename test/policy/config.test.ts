import { describe, expect, it } from "vitest";
import type { ConfigIssue } from "../../src/config/issues.js";
import { OnbehalfError } from "../../src/errors.js";
import { loadConfigFile, loadConfigObject, loadConfigText } from "../../src/govern/config.js";

function issuesOf(text: string, env: NodeJS.ProcessEnv = {}): ConfigIssue[] {
  try {
    loadConfigText(text, "onbehalf.yaml", env);
  } catch (e) {
    expect(e).toBeInstanceOf(OnbehalfError);
    expect((e as OnbehalfError).code).toBe("ERR_CONFIG_INVALID");
    return (e as OnbehalfError).details as ConfigIssue[];
  }
  throw new Error("expected the config to be refused");
}

describe("config validation", () => {
  it("loads the example config without errors or warnings", () => {
    const loaded = loadConfigFile("examples/onbehalf.yaml", {});
    expect(loaded.warnings).toEqual([]);
    expect([...loaded.policy.tools.keys()]).toContain("get_customer");
    expect(loaded.config.server.admin_tokens).toEqual([""]);
  });

  it("refuses two MCP upstreams whose exposed names could meet, naming both", () => {
    const upstream = (name: string, extra: Record<string, unknown> = {}) => ({
      name,
      transport: "streamable-http" as const,
      url: `http://127.0.0.1:9/${name}`,
      separator: "_" as const,
      ...extra,
    });
    expect(() => loadConfigObject({ upstreams: [upstream("mail_archive"), upstream("mail")] })).toThrow(
      /upstreams mail_archive and mail expose tools as mail_archive_… and mail_…: a tool of one could take the name of a tool of the other/,
    );
    expect(() =>
      loadConfigObject({ upstreams: [upstream("a", { prefix: "crm" }), upstream("b", { prefix: "crm" })] }),
    ).toThrow(/upstreams a and b expose tools as crm_… and crm_…/);
    expect(() => loadConfigObject({ upstreams: [upstream("crm"), upstream("mail")] })).not.toThrow();
  });

  it("refuses a __proto__ key instead of letting the entry vanish, and says where it is", () => {
    const issues = issuesOf(
      "tenants:\n  - id: acme\n    policy:\n      users:\n        __proto__:\n          '*': { permission: allow }\n",
    );
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatchObject({
      file: "onbehalf.yaml",
      line: 5,
      path: "tenants[0].policy.users.__proto__",
    });
    expect(issues[0]!.message).toContain("__proto__");
  });

  it("names file, line, column, field and a fix for a misspelt field", () => {
    const [issue] = issuesOf("tools:\n  - name: t\n    required_scope: [a]\n");
    expect(issue).toMatchObject({
      file: "onbehalf.yaml",
      line: 3,
      column: 5,
      path: "tools[0].required_scope",
    });
    expect(issue!.message).toBe('unknown field "required_scope"');
    expect(issue!.fix).toContain('did you mean "required_scopes"');
  });

  it("names an unknown tier and suggests the right one", () => {
    const [issue] = issuesOf(
      "tenants:\n  - id: acme\n    policy:\n      defaults:\n        interactiv: { permission: allow }\n",
    );
    expect(issue).toMatchObject({ line: 5, path: "tenants[0].policy.defaults.interactiv" });
    expect(issue!.message).toBe('unknown tier "interactiv"');
    expect(issue!.fix).toContain('"interactive"');
  });

  it("refuses a bad enum value with a suggestion", () => {
    const [issue] = issuesOf(
      "tenants:\n  - id: acme\n    policy:\n      defaults:\n        '*': { permission: alow }\n",
    );
    expect(issue!.message).toBe('"alow" is not one of allow, deny, ask');
    expect(issue!.fix).toBe('did you mean "allow"?');
  });

  it("refuses a CEL condition that does not compile, at the line of the condition", () => {
    const text = [
      "tools: [{ name: t }]",
      "tenants:",
      "  - id: acme",
      "    policy:",
      "      rules:",
      "        - id: r1",
      "          when: 'args.amount >'",
      "          effect: deny",
      "        - id: r2",
      "          when: \"usr.sub == 'x'\"",
      "          effect: deny",
    ].join("\n");
    const issues = issuesOf(text);
    expect(issues.map((i) => [i.line, i.path])).toEqual([
      [7, "tenants[0].policy.rules[0].when"],
      [10, "tenants[0].policy.rules[1].when"],
    ]);
    expect(issues[0]!.message).toContain("CEL syntax error");
    expect(issues[1]!.message).toContain('unknown variable "usr"');
  });

  it("never accepts alg none, and wants a secret for HS algorithms", () => {
    const none = issuesOf(
      "issuers:\n  - issuer: https://idp.test/\n    audience: a\n    algorithms: [RS256, none]\n",
    );
    expect(none[0]!.message).toContain('"none" is never accepted');
    const hs = issuesOf(
      "issuers:\n  - issuer: https://idp.test/\n    audience: a\n    algorithms: [HS256]\n",
    );
    expect(hs[0]).toMatchObject({ line: 4, path: "issuers[0].algorithms" });
    expect(hs[0]!.message).toContain("needs a shared secret");
  });

  it("refuses plain http issuers off loopback", () => {
    const [issue] = issuesOf("issuers:\n  - issuer: http://idp.example.com/\n    audience: a\n");
    expect(issue!.message).toContain("plain http");
    expect(() =>
      loadConfigText("issuers:\n  - issuer: http://127.0.0.1:9000/\n    audience: a\n", "x.yaml", {}),
    ).not.toThrow();
  });

  it("checks issuer settings in one place: what the verifier would refuse at start, validate reports at its line", () => {
    const urn = issuesOf("issuers:\n  - issuer: urn:example:idp\n    audience: a\n");
    expect(urn[0]).toMatchObject({ line: 2, path: "issuers[0].issuer" });
    expect(urn[0]!.message).toContain("keys cannot be discovered");
    const short = issuesOf(
      "issuers:\n  - issuer: https://idp.test/\n    audience: a\n    algorithms: [RS256, HS256]\n    secret: short\n",
    );
    expect(short[0]).toMatchObject({ line: 5, path: "issuers[0].secret" });
    expect(short[0]!.message).toContain("HS256 needs at least 32");
  });

  it("substitutes environment variables and reports a missing one at its line", () => {
    const ok = loadConfigText(
      'server:\n  admin_tokens: ["${TOKEN}", "${OTHER:-fallback-token-123456}"]\n',
      "x.yaml",
      {
        TOKEN: "a-very-long-admin-token",
      },
    );
    expect(ok.config.server.admin_tokens).toEqual(["a-very-long-admin-token", "fallback-token-123456"]);
    const [issue] = issuesOf('server:\n  port: 1\n  admin_tokens: ["${MISSING_TOKEN}"]\n');
    expect(issue).toMatchObject({ line: 3, message: "environment variable MISSING_TOKEN is not set" });
  });

  it("reports YAML syntax errors with their line", () => {
    const [issue] = issuesOf("tools:\n  - name: t\n bad: : :\n");
    expect(issue!.message).toMatch(/^not valid YAML/);
    expect(issue!.line).toBeGreaterThanOrEqual(2);
  });

  it("reports duplicate tenants, tools and rule ids", () => {
    const issues = issuesOf(
      "tools: [{ name: t }, { name: t }]\ntenants:\n  - id: a\n    policy: { rules: [{ id: r, effect: deny }, { id: r, effect: deny }] }\n  - id: a\n",
    );
    expect(issues.map((i) => i.message).sort()).toEqual([
      'duplicate rule id "r"',
      'duplicate tenant "a"',
      'duplicate tool "t"',
    ]);
  });

  it("checks registered OAuth clients: the secret or keys their method needs, no private keys, one tenant each", () => {
    const hash = "a".repeat(64);
    const issues = issuesOf(
      [
        "tenants:",
        "  - id: a",
        "    clients:",
        `      - { client_id: basic, auth: client_secret_basic, agents: [bot] }`,
        `      - { client_id: jwt, auth: private_key_jwt, secret_sha256: "${hash}", agents: [bot] }`,
        `      - { client_id: priv, auth: private_key_jwt, jwks: { keys: [{ kty: EC, crv: P-256, x: x, y: y, d: d }] }, agents: [bot] }`,
        "  - id: b",
        "    require_client_auth: true",
        "    clients:",
        `      - { client_id: basic, auth: client_secret_post, secret_sha256: "${hash}", agents: [bot] }`,
        "  - id: c",
        "    require_client_auth: true",
      ].join("\n"),
    );
    expect(issues.map((i) => `${i.line} ${i.path}: ${i.message}`)).toEqual([
      "4 tenants[0].clients[0].secret_sha256: client basic authenticates with client_secret_basic but has no secret_sha256",
      "5 tenants[0].clients[1].jwks: client jwt authenticates with private_key_jwt but has no jwks",
      "5 tenants[0].clients[1].secret_sha256: client jwt authenticates with private_key_jwt: a secret would never be checked",
      "6 tenants[0].clients[2].jwks.keys[0]: client priv's key 0 holds private or symmetric key material",
      "10 tenants[1].clients[0].client_id: client_id basic is registered in tenants a and b",
      "12 tenants[2].require_client_auth: tenant c requires client authentication but registers no clients: every delegation would be refused",
    ]);
    expect(issues.every((i) => i.fix !== undefined && i.fix.length > 0)).toBe(true);
  });

  it("refuses audit.writer_thread where it cannot apply: PostgreSQL, or SQLite in memory", () => {
    for (const store of ["postgres://u@db/audit", "sqlite::memory:"]) {
      const issues = issuesOf(`audit:\n  store: "${store}"\n  writer_thread: true\n`);
      expect(issues).toMatchObject([{ line: 3, path: "audit.writer_thread" }]);
      expect(issues[0]!.message).toMatch(/^audit.writer_thread applies to a SQLite file store/);
    }
    expect(() =>
      loadConfigText('audit:\n  store: "sqlite:./a.db"\n  writer_thread: true\n', "x.yaml", {}),
    ).not.toThrow();
  });

  it("refuses a policy entry or rule for a tool no tools entry declares, naming the likely one", () => {
    const text =
      "tools: [{ name: get_customer }]\ntenants:\n  - id: a\n    policy:\n      tools:\n        get_custmer: { '*': { permission: deny } }\n      rules:\n        - { id: r, tools: [exprot_all], when: 'true', effect: deny }\n";
    const refused = issuesOf(text);
    expect(refused.map((i) => [i.path, i.line, i.fix])).toEqual([
      ["tenants[0].policy.tools.get_custmer", 6, 'did you mean "get_customer"?'],
      [
        "tenants[0].policy.rules[0].tools[0]",
        8,
        "declare it under tools: (a name alone will do), or set allow_undeclared_tools: true if your tools are declared in code",
      ],
    ]);
    expect(refused[0]!.message).toContain("would apply to no call");
  });

  it("counts the tools of an upstream that exposes all it lists as declared, under its prefix only", () => {
    const upstream =
      "upstreams: [{ name: search, transport: stdio, command: x, expose: all, separator: _ }]\ntenants:\n  - id: a\n    policy:\n      tools:\n";
    expect(() =>
      loadConfigText(`${upstream}        search_docs: { '*': { permission: deny } }\n`, "x.yaml", {}),
    ).not.toThrow();
    expect(issuesOf(`${upstream}        serch_docs: { '*': { permission: deny } }\n`)[0]!.path).toBe(
      "tenants[0].policy.tools.serch_docs",
    );
  });

  it("lets allow_undeclared_tools: true mean tools declared in code, with a warning per name", () => {
    const loaded = loadConfigText(
      "allow_undeclared_tools: true\ntools: [{ name: get_customer }]\ntenants:\n  - id: a\n    policy:\n      tools:\n        get_custmer: { '*': { permission: deny } }\n",
      "x.yaml",
      {},
    );
    expect(loaded.warnings).toHaveLength(1);
    expect(loaded.warnings[0]).toMatchObject({ line: 7, fix: 'did you mean "get_customer"?' });
  });

  it("refuses a bad redaction path", () => {
    const [issue] = issuesOf("tools:\n  - name: t\n    redact: ['cards[x].number']\n");
    expect(issue!.path).toBe("tools[0].redact[0]");
    expect(issue!.message).toContain("cards[x].number");
  });
});
