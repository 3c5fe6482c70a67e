/**
 * The console (`/ui`): its built page and files, sign-in, and the APIs its pages read: the audit explorer, the
 * approvals inbox, who can do what, and health. Every API answers only to a console session; every change
 * needs the session's CSRF token; an approver sees their own tenant only.
 */
import type { FastifyInstance } from "fastify";
import type { ServerContext } from "../context.js";
import { consoleAssetRoutes } from "./assets.js";
import { consoleAuditRoutes } from "./audit.js";
import { consoleHealthRoutes, type DecisionStats } from "./health.js";
import { consoleInboxRoutes } from "./inbox.js";
import { consolePolicyRoutes } from "./policy.js";
import { signInRoutes } from "./sign-in.js";

export interface ConsoleOptions {
  /** The verifier key of the audit's checkpoints, published to the browser that checks proofs. */
  readonly verifierKey: string;
  /** An IdP token carrying this scope signs in as an admin; null: only admin tokens do. */
  readonly adminScope: string | null;
  /** The console is reached over HTTPS (`public_url` says so): the cookie is Secure. */
  readonly secure: boolean;
  /** The origin of `public_url`, whose pages may sign in whatever Host a proxy forwards; null without one. */
  readonly publicOrigin: string | null;
  readonly stats: DecisionStats;
  /** Where the built console is (default: dist/ui). */
  readonly dir?: string;
}

export function consoleRoutes(app: FastifyInstance, ctx: ServerContext, options: ConsoleOptions): void {
  consoleAssetRoutes(app, options.dir);
  const auth = signInRoutes(app, ctx, {
    adminScope: options.adminScope,
    secure: options.secure,
    publicOrigin: options.publicOrigin,
  });
  consoleAuditRoutes(app, ctx, auth, options.verifierKey);
  consoleInboxRoutes(app, ctx, auth);
  consolePolicyRoutes(app, ctx, auth);
  consoleHealthRoutes(app, ctx, auth, options.stats);
}
