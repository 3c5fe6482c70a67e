/** What every route of the control plane shares. */
import type { FastifyRequest } from "fastify";
import type { Governor } from "../govern/governor.js";
import type { SigningKey } from "../identity/keys.js";
import type { LiveConfigShare } from "./live-config.js";
import type { Metrics } from "./metrics.js";
import type { PendingCalls } from "./pending.js";
import type { ReportTokens } from "./report-token.js";
import type { StateStore } from "./state.js";

export interface ServerContext {
  readonly gov: Governor;
  readonly state: StateStore;
  /** The `iss` (and `aud`) of the delegation and on-behalf-of tokens this control plane signs. */
  readonly issuer: string;
  /** The key that signs them (published at /.well-known/jwks.json). */
  readonly key: SigningKey;
  /** Who the admin presenting the request's token is (`admin:<token fingerprint>`), or null. */
  readonly adminOf: (req: FastifyRequest) => string | null;
  readonly metrics: Metrics;
  /** How long an approval waits for a human before it expires. */
  readonly approvalTtlMs: number;
  /** How long an allowed call may take to report its result. */
  readonly pendingTtlMs: number;
  /** Audits calls that went unreported (expired, evicted), and says why a late report finds nothing. */
  readonly pending: PendingCalls;
  /** Signs and opens the report tokens of calls that wait nowhere (`"report": "token"`). */
  readonly reportTokens: ReportTokens;
  /** The live configuration: which is in force, shared with the other instances on change. */
  readonly live: LiveConfigShare;
}
