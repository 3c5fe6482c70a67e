/** Governors on inline configs with an in-memory SQLite audit, for tests. */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ConfigInput } from "../../src/config/schema.js";
import { createGovernor, type GovernorOptions } from "../../src/govern/bootstrap.js";
import type { Governor } from "../../src/govern/governor.js";

/** One audit signing key for every test governor, outside the repository. */
export const TEST_AUDIT_KEY = join(mkdtempSync(join(tmpdir(), "onbehalf-keys-")), "audit.jwk");

export const TEST_TOOLS = [
  { name: "get_customer", required_scopes: ["customers:read"], redact: ["ssn", "cards[*].number"] },
  { name: "issue_refund", required_scopes: ["refunds:write"] },
  { name: "read_email", required_scopes: ["email.read"] },
];

export async function testGovernor(
  config: Partial<ConfigInput> = {},
  options: Partial<GovernorOptions> = {},
): Promise<{ gov: Governor; warnings: string[] }> {
  const warnings: string[] = [];
  const gov = await createGovernor({
    config: {
      tools: TEST_TOOLS,
      tenants: [
        {
          id: "acme",
          policy: {
            defaults: { "*": { permission: "allow", post_transform: "redact" } },
            rules: [{ id: "big-refunds", tools: ["issue_refund"], when: "args.amount > 500", effect: "ask" }],
          },
        },
      ],
      audit: { store: "sqlite::memory:", flush_ms: 1, signing_key: TEST_AUDIT_KEY },
      ...config,
    },
    warn: (m) => warnings.push(m),
    ...options,
  });
  return { gov, warnings };
}
