/** `resources:` and `prompts:`: validated like the rest of the config, and named by policy as tools. */
import { describe, expect, it } from "vitest";
import type { ConfigIssue } from "../../src/config/issues.js";
import { governingResource, uriMatches } from "../../src/config/resources.js";
import { OnbehalfError } from "../../src/errors.js";
import { loadConfigText } from "../../src/govern/config.js";
import { templatePattern, templateSample } from "../../src/server/mcp-uri-templates.js";

function issuesOf(text: string): ConfigIssue[] {
  try {
    loadConfigText(text, "onbehalf.yaml", {});
  } catch (e) {
    expect(e).toBeInstanceOf(OnbehalfError);
    return (e as OnbehalfError).details as ConfigIssue[];
  }
  throw new Error("expected the config to be refused");
}

describe("resources: and prompts: in the config", () => {
  it("compiles each entry into the policy as resource:<uri> and prompt:<name>", () => {
    const { policy } = loadConfigText(
      [
        "resources:",
        "  - { uri: 'crm://customers/*', required_scopes: [customers:read], redact: [ssn] }",
        "prompts:",
        "  - { name: crm.summarize, required_scopes: [customers:read] }",
        "tenants:",
        "  - id: acme",
        "    policy:",
        "      tools: { 'resource:crm://customers/*': { '*': { rate_limit_per_minute: 5 } } }",
        "      rules:",
        "        - { id: r, tools: ['prompt:crm.summarize'], when: \"args.arguments.customer == 'x'\", effect: deny }",
      ].join("\n"),
      "onbehalf.yaml",
      {},
    );
    expect(policy.tools.get("resource:crm://customers/*")).toMatchObject({
      requiredScopes: ["customers:read"],
      redact: ["ssn"],
    });
    expect(policy.tools.get("prompt:crm.summarize")?.requiredScopes).toEqual(["customers:read"]);
  });

  it("names file, line and field for a misspelt field and for a URI without a scheme", () => {
    const [misspelt] = issuesOf("resources:\n  - uri: 'crm://a'\n    required_scope: [a]\n");
    expect(misspelt).toMatchObject({ file: "onbehalf.yaml", line: 3, path: "resources[0].required_scope" });
    expect(misspelt!.fix).toContain('did you mean "required_scopes"');
    const [scheme] = issuesOf("prompts: []\nresources:\n  - uri: customers/*\n");
    expect(scheme).toMatchObject({ line: 3, path: "resources[0].uri" });
    expect(scheme!.message).toContain("scheme");
  });

  it("refuses a policy name no resources: or prompts: entry declares, saying where to declare it", () => {
    const [issue] = issuesOf(
      [
        "resources: [{ uri: 'crm://customers/*' }]",
        "tenants:",
        "  - id: acme",
        "    policy:",
        "      tools: { 'resource:crm://customer/*': { '*': { permission: deny } } }",
      ].join("\n"),
    );
    expect(issue).toMatchObject({ line: 5 });
    expect(issue!.message).toContain("not declared under resources:");
    expect(issue!.fix).toContain('did you mean "resource:crm://customers/*"');
  });

  it("refuses the same resource declared twice", () => {
    const issues = issuesOf("resources:\n  - uri: 'crm://a/*'\n  - uri: 'crm://a/*'\n");
    expect(issues[0]).toMatchObject({ line: 3, path: "resources[1].uri" });
  });
});

describe("URI patterns", () => {
  it("matches * within a path segment and ** across them", () => {
    expect(uriMatches("crm://customers/*", "crm://customers/42")).toBe(true);
    expect(uriMatches("crm://customers/*", "crm://customers/42/orders")).toBe(false);
    expect(uriMatches("crm://**", "crm://customers/42/orders")).toBe(true);
    expect(uriMatches("crm://customers/42", "crm://customers/42")).toBe(true);
    expect(uriMatches("crm://a.b/*", "crm://aXb/1")).toBe(false);
  });

  it("governs a URI by the exact entry, else the most specific pattern", () => {
    const entries = [{ uri: "crm://**" }, { uri: "crm://customers/*" }, { uri: "crm://customers/42" }];
    expect(governingResource(entries, "crm://customers/42")).toBe(entries[2]);
    expect(governingResource(entries, "crm://customers/7")).toBe(entries[1]);
    expect(governingResource(entries, "crm://orders/7")).toBe(entries[0]);
    expect(governingResource(entries, "mail://x")).toBeUndefined();
  });

  it("matches the URIs an RFC 6570 template expands to, and governs a template as a pattern", () => {
    expect(templatePattern("crm://orders/{id}")?.test("crm://orders/9")).toBe(true);
    expect(templatePattern("crm://orders/{id}")?.test("crm://orders/9/items")).toBe(false);
    expect(templatePattern("file:///{+path}")?.test("file:///a/b/c")).toBe(true);
    expect(templatePattern("crm://x.{id}")?.test("crm://xy1")).toBe(false);
    expect(templateSample("crm://orders/{id}")).toBe("crm://orders/*");
    expect(templateSample("file:///{+path}")).toBe("file:///**");
  });
});
