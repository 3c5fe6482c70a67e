/** Principals for unit tests of policy and context, where no token is involved. */
import type { Principal } from "../../src/identity/principal.js";

export function principal(overrides: Partial<Principal> & { user: string }): Principal {
  return {
    sub: overrides.user,
    issuer: "https://idp.test/",
    tenant: "acme",
    email: `${overrides.user}@acme.test`,
    scopes: [],
    roles: [],
    exp: Math.floor(Date.now() / 1000) + 3600,
    claims: {},
    ...overrides,
  };
}
