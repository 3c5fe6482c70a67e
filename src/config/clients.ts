/**
 * Agent runtimes registered as OAuth clients of `/v1/token` (RFC 6749 §2), per tenant: which client may
 * exchange tokens, how it authenticates (a secret, or a key it signs assertions with: RFC 7523
 * `private_key_jwt`), the agents it may act as and the tiers it may take. A tenant with `require_client_auth`
 * takes delegations from registered, authenticated clients only.
 */
import { z } from "zod";
import { nonEmpty, Tier } from "./fields.js";

/** An agent's name in a chain: no spaces, control characters or unpaired surrogates. */
export const AgentName = z
  .string()
  .min(1)
  .max(200)
  .regex(/^[^\s\p{Cc}\p{Cs}]+$/u, "an agent name has no spaces, control characters or unpaired surrogates");

/** How a registered client authenticates at the token endpoint (RFC 8414 `token_endpoint_auth_methods`). */
export const CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"] as const;
export type ClientAuthMethod = (typeof CLIENT_AUTH_METHODS)[number];

/** A public key of a client's JWKS: asymmetric, without private parts. */
const PublicJwk = z.looseObject({ kty: z.enum(["RSA", "EC", "OKP"]), kid: nonEmpty.optional() });

export const AgentClientConfig = z.strictObject({
  /** Printable ASCII without spaces (RFC 6749 §2.2 leaves it open; this keeps it safe in logs and headers). */
  client_id: nonEmpty.max(200).regex(/^[\x21-\x7e]+$/, "a client_id is printable ASCII without spaces"),
  auth: z.enum(CLIENT_AUTH_METHODS),
  /**
   * `client_secret_basic` and `client_secret_post`: the SHA-256 of the secret, 64 hex digits — never the
   * secret itself (`printf %s "$SECRET" | sha256sum`). Use a long random secret (32 bytes or more).
   */
  secret_sha256: z
    .string()
    .regex(/^[0-9a-fA-F]{64}$/, "secret_sha256 is the SHA-256 of the secret, 64 hex digits")
    .optional(),
  /** `private_key_jwt`: the public keys the client signs its assertions with (a JWKS). */
  jwks: z.strictObject({ keys: z.array(PublicJwk).min(1) }).optional(),
  /** The agents it may name in a delegation (as `actor` or `subject_actor`). */
  agents: z.array(AgentName).min(1),
  /** The tiers it may take; default: any. */
  tiers: z.array(Tier).min(1).optional(),
});
export type AgentClientConfig = z.output<typeof AgentClientConfig>;

/** A problem of one client entry that its schema cannot see, with the field it concerns. */
export interface ClientProblem {
  /** Where in the entry, e.g. `["jwks", "keys", 0]`. */
  readonly field: readonly (string | number)[];
  readonly message: string;
  readonly fix: string;
}

/** What is wrong with a client entry as a whole (a secret for a key method, a private key in its JWKS). */
export function clientProblems(client: AgentClientConfig): ClientProblem[] {
  const problems: ClientProblem[] = [];
  if (client.auth === "private_key_jwt") {
    if (client.jwks === undefined) {
      problems.push({
        field: ["jwks"],
        message: `client ${client.client_id} authenticates with private_key_jwt but has no jwks`,
        fix: "add jwks: { keys: [<the client's public JWK>] }",
      });
    }
    if (client.secret_sha256 !== undefined) {
      problems.push({
        field: ["secret_sha256"],
        message: `client ${client.client_id} authenticates with private_key_jwt: a secret would never be checked`,
        fix: "remove secret_sha256, or use auth: client_secret_basic",
      });
    }
    for (const [i, key] of (client.jwks?.keys ?? []).entries()) {
      if ("d" in key || "p" in key || "k" in key) {
        problems.push({
          field: ["jwks", "keys", i],
          message: `client ${client.client_id}'s key ${i} holds private or symmetric key material`,
          fix: "list the client's public key only (no d, p, q or k members)",
        });
      }
    }
  } else {
    if (client.secret_sha256 === undefined) {
      problems.push({
        field: ["secret_sha256"],
        message: `client ${client.client_id} authenticates with ${client.auth} but has no secret_sha256`,
        fix: 'add secret_sha256: the output of printf %s "$SECRET" | sha256sum',
      });
    }
    if (client.jwks !== undefined) {
      problems.push({
        field: ["jwks"],
        message: `client ${client.client_id} authenticates with a secret: its jwks would never be used`,
        fix: "remove jwks, or use auth: private_key_jwt",
      });
    }
  }
  return problems;
}
