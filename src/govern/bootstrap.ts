/**
 * Starting a governor: the config loaded, the identity verifier, the audit store and writer, the rate limiter,
 * each waited for within bounds and closed again if a later one fails; and the paths a config names (keys,
 * log id, journal) that the CLI uses too.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { dirname, join, resolve } from "node:path";
import { journalDir } from "../audit/journal.js";
import { type AuditLog, openAuditLog } from "../audit/log.js";
import { OtlpAuditExporter } from "../audit/otlp.js";
import type { AuditStore } from "../audit/store.js";
import type { IssuerConfig } from "../config/issuer.js";
import { formatIssue } from "../config/issues.js";
import type { ConfigInput } from "../config/schema.js";
import { OnbehalfError } from "../errors.js";
import { devIssuerConfig } from "../identity/dev-issuer.js";
import { loadOrCreateSigningKey } from "../identity/keys.js";
import { createIdentity } from "../identity/verify.js";
import { createMemoryLimiter } from "../limits/memory.js";
import type { RateLimiter } from "../limits/window.js";
import { redactUrl, waitFor } from "../retry.js";
import { type LoadedConfig, loadConfigFile, loadConfigObject } from "./config.js";
import { Governor, type GovernorSettings } from "./governor.js";

/** Options of {@link createGovernor}. */
export interface GovernorOptions extends GovernorSettings {
  /** A path to `onbehalf.yaml` / JSON, or the config as an object. */
  config: string | ConfigInput;
  /** With a config object: where its relative paths (keys, a SQLite file) resolve. Default: the working directory. */
  baseDir?: string;
  /** Environment for `${VAR}` substitution. Default: process.env. */
  env?: NodeJS.ProcessEnv;
  /** Use this audit store instead of the one the config names. */
  auditStore?: AuditStore;
  /** Use this rate limiter instead of the one the config names. */
  limiter?: RateLimiter;
  /** Where warnings go (the narrow-tool lint, the dev issuer). Default: console.warn. */
  warn?: (message: string) => void;
  /** fetch for OIDC discovery and JWKS (tests). Default: global fetch. */
  fetch?: typeof fetch;
  /**
   * On SIGTERM or SIGINT, close the governor (flushing the audit and signing a final checkpoint) and exit.
   * For processes the governor owns, like `onbehalf serve`. Default false.
   */
  closeOnSignals?: boolean;
  /**
   * onbehalf's own delegation-token issuers to trust beyond the config's (the control plane adds its own; an
   * app verifying the control plane's delegation tokens in-process adds that one). Their tokens carry the
   * issuer that verified the human first, by which tenants are bound to their issuers.
   */
  extraIssuers?: readonly IssuerConfig[];
  /** What this process is, shown to a second writer that finds this one holding the audit log. */
  label?: string;
  /** How long to wait for the audit store and Redis to answer at start (ms). Default 10 s. */
  startupTimeoutMs?: number;
}

/**
 * Create a governor from a config file or object.
 *
 * @example
 * const gov = await createGovernor({ config: "onbehalf.yaml" });
 * const principal = await gov.verify(req.headers.authorization);
 */
export async function createGovernor(options: GovernorOptions): Promise<Governor> {
  const env = options.env ?? process.env;
  const loaded =
    typeof options.config === "string"
      ? loadConfigFile(options.config, env)
      : loadConfigObject(options.config, options.baseDir);
  const warn = options.warn ?? ((m: string) => console.warn(`onbehalf: ${m}`));
  for (const w of loaded.warnings) warn(formatIssue(w));

  const identity = createIdentity({
    issuers: [...trustedIssuers(loaded), ...(options.extraIssuers ?? [])],
    // The extra issuers are onbehalf's own delegation tokens: they carry the human's first issuer.
    carriers: (options.extraIssuers ?? []).map((i) => i.issuer),
    ...(options.fetch ? { fetch: options.fetch } : {}),
    ...(options.now ? { now: options.now } : {}),
  });
  const store = options.auditStore ?? (await openAuditStore(loaded));
  const auditConfig = loaded.config.audit;
  const startup = { timeoutMs: options.startupTimeoutMs ?? 10_000 };
  // A database still starting (or being set up by a peer) is waited for, within bounds, with one clear error.
  await waitFor(`the audit store (${describeStore(auditConfig.store)})`, () => store.init(), {
    ...startup,
    code: "ERR_AUDIT_UNAVAILABLE",
    onRetry: once(() => warn(`waiting for the audit store (${describeStore(auditConfig.store)})…`)),
  }).catch(async (e: unknown) => {
    if (options.auditStore === undefined) await store.close().catch(() => {});
    throw e;
  });
  let audit: AuditLog;
  try {
    audit = await openAuditLog(store, {
      logId: auditLogId(loaded),
      // Without a configured log id, each process on a host takes a log of its own (see auditLogId).
      slots: auditConfig.log_id === undefined,
      label: options.label ?? "an onbehalf governor",
      batchSize: auditConfig.batch_size,
      flushMs: auditConfig.flush_ms,
      onError: (e) => warn(`audit write failed: ${(e as Error).message}`),
      checkpoints: {
        key: loadOrCreateSigningKey(auditKeyPath(loaded)).privateKey,
        name: auditLogId(loaded),
        every: auditConfig.checkpoint_every,
        seconds: auditConfig.checkpoint_seconds,
      },
      acceptUnsignedTail: auditConfig.resume_unsigned_tail,
      journal: auditJournalDir(loaded),
      ...(auditConfig.otlp === undefined
        ? {}
        : {
            forward: new OtlpAuditExporter({
              endpoint: auditConfig.otlp.endpoint,
              headers: auditConfig.otlp.headers,
              onError: warn,
            }),
          }),
    });
  } catch (e) {
    if (options.auditStore === undefined) await store.close().catch(() => {});
    throw e;
  }
  let limiter: RateLimiter;
  try {
    limiter = options.limiter ?? (await openLimiter(loaded, startup.timeoutMs));
  } catch (e) {
    await audit.close().catch(() => {});
    if (options.auditStore === undefined) await store.close().catch(() => {});
    throw e;
  }
  const gov = new Governor(loaded, identity, store, audit, limiter, options, warn);
  const resumed = audit.resumed;
  if (resumed !== null) {
    // On record, in the log itself: which unsigned records this writer found, checked and signs from now on.
    const who = resumed.previous;
    const reason =
      `resumed log ${audit.logId} over records ${resumed.from} to ${resumed.to}, left unsigned by ` +
      (who === null
        ? "a writer that stopped cleanly (accepted by audit.resume_unsigned_tail)"
        : `${who.label} (host ${who.host}, pid ${who.pid}), which stopped without signing them`) +
      "; their hashes and links were checked";
    warn(reason);
    gov.recordAdmin(reason, { from: resumed.from, to: resumed.to, previous: who });
  }
  if (options.closeOnSignals === true) closeOnSignals(gov, warn);
  return gov;
}

function closeOnSignals(gov: Governor, warn: (m: string) => void): void {
  const onSignal = (signal: NodeJS.Signals) => {
    gov.close().then(
      () => process.exit(0),
      (e: unknown) => {
        warn(`${signal}: could not flush the audit: ${(e as Error).message}`);
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", onSignal);
  process.once("SIGINT", onSignal);
}

/** Where the development issuer's key lives for a config: `keys/dev-issuer.jwk` next to the config file. */
export function devKeyPath(loaded: Pick<LoadedConfig, "baseDir">): string {
  return resolve(loaded.baseDir, "keys/dev-issuer.jwk");
}

/**
 * The audit log id a config names: `audit.log_id`, else `onbehalf@<hostname>`. Without a configured id, a
 * process that finds `onbehalf@<hostname>` held by another live process takes `onbehalf@<hostname>/2` (and so
 * on): one log per process, the same one again after a restart. Checkpoints are signed under this name.
 */
export function auditLogId(loaded: Pick<LoadedConfig, "config">): string {
  return loaded.config.audit.log_id ?? `onbehalf@${hostname()}`;
}

/** The key file that signs audit checkpoints. */
export function auditKeyPath(loaded: Pick<LoadedConfig, "config" | "baseDir">): string {
  return resolve(loaded.baseDir, loaded.config.audit.signing_key);
}

/** The writer's journal directory (see src/audit/journal.ts): `audit.journal`, else beside the audit key. */
export function auditJournalDir(loaded: Pick<LoadedConfig, "config" | "baseDir">): string {
  const configured = loaded.config.audit.journal;
  const dir =
    configured === undefined ? journalDir(auditKeyPath(loaded)) : resolve(loaded.baseDir, configured);
  // One journal per store: a log of the same id in another database (a demo's, a test's) has its own history.
  return join(dir, createHash("sha256").update(storeLocation(loaded)).digest("hex").slice(0, 12));
}

/** Where the audit store is, as a stable string (a SQLite path made absolute). */
function storeLocation(loaded: Pick<LoadedConfig, "config" | "baseDir">): string {
  const url = loaded.config.audit.store;
  if (!url.startsWith("sqlite:") || url === "sqlite::memory:") return url;
  return `sqlite:${resolve(loaded.baseDir, url.slice("sqlite:".length))}`;
}

/**
 * The development admin token of a config with `dev_issuer: true`: random, kept beside the development
 * issuer's key (`keys/dev-admin.token`, mode 0600), made on first use. `serve` accepts it as an admin token and
 * prints it, so a first hour can approve calls and read the audit.
 */
export function devAdminToken(loaded: Pick<LoadedConfig, "baseDir">): string {
  const path = join(dirname(devKeyPath(loaded)), "dev-admin.token");
  try {
    const token = readFileSync(path, "utf8").trim();
    if (token.length >= 16) return token;
  } catch {}
  const token = `dev-admin-${randomBytes(24).toString("base64url")}`;
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, `${token}\n`, { mode: 0o600 });
  return token;
}

/**
 * The issuers a config trusts: its `issuers`, plus the development issuer when `dev_issuer: true`. The
 * development issuer accepts its own audience and the MCP gateway's resource, so `dev-token --audience
 * <public_url>/mcp` reaches `/mcp`.
 */
export function trustedIssuers(loaded: Pick<LoadedConfig, "config" | "baseDir">): IssuerConfig[] {
  const issuers = [...loaded.config.issuers];
  if (loaded.config.dev_issuer) {
    const key = loadOrCreateSigningKey(devKeyPath(loaded));
    issuers.push(devIssuerConfig(key.publicJwk, [configuredMcpResource(loaded.config.server)]));
  }
  return issuers;
}

/**
 * The MCP gateway's resource (RFC 8707) as the config gives it: `server.mcp_resource`, else
 * `<public_url>/mcp`, else `http://<host>:<port>/mcp` (what the server answers at without a `public_url`).
 *
 * @example
 * configuredMcpResource({ public_url: "http://127.0.0.1:8787", host: "127.0.0.1", port: 8787 }); // "http://127.0.0.1:8787/mcp"
 */
export function configuredMcpResource(server: {
  readonly mcp_resource?: string | undefined;
  readonly public_url?: string | undefined;
  readonly host: string;
  readonly port: number;
}): string {
  if (server.mcp_resource !== undefined) return server.mcp_resource;
  const base =
    server.public_url ??
    `http://${server.host.includes(":") ? `[${server.host}]` : server.host}:${server.port}`;
  return `${base.replace(/\/$/, "")}/mcp`;
}

/** Open the audit store a config names (loading its driver only then, so the core import stays light). */
export async function openAuditStore(loaded: Pick<LoadedConfig, "config" | "baseDir">): Promise<AuditStore> {
  const url = loaded.config.audit.store;
  if (url.startsWith("sqlite:")) {
    const path = url.slice("sqlite:".length);
    if (loaded.config.audit.writer_thread) {
      const { openThreadedSqliteStore } = await import("../audit/sqlite-thread.js");
      return openThreadedSqliteStore(resolve(loaded.baseDir, path));
    }
    const { openSqliteStore } = await import("../audit/sqlite.js");
    return openSqliteStore(path === ":memory:" ? path : resolve(loaded.baseDir, path));
  }
  if (url.startsWith("postgres://") || url.startsWith("postgresql://")) {
    const { openPostgresStore } = await import("../audit/postgres.js");
    return openPostgresStore(url);
  }
  throw new OnbehalfError(
    "ERR_CONFIG_INVALID",
    `audit.store "${url}" is not supported: use sqlite:./onbehalf.db, sqlite::memory: or postgres://user@host/db`,
  );
}

/** The audit store's address for messages (no password). */
function describeStore(url: string): string {
  if (url.startsWith("sqlite:")) return `SQLite at ${url.slice("sqlite:".length)}`;
  return `PostgreSQL at ${redactUrl(url)}`;
}

function once(f: () => void): () => void {
  let done = false;
  return () => {
    if (!done) f();
    done = true;
  };
}

async function openLimiter(loaded: LoadedConfig, startupTimeoutMs: number): Promise<RateLimiter> {
  const store = loaded.config.limits.store;
  if (store === "memory") return createMemoryLimiter();
  if (store.startsWith("redis://") || store.startsWith("rediss://")) {
    const { createRedisLimiter, redisReady } = await import("../limits/redis.js");
    const limiter = createRedisLimiter(store, { prefix: `${loaded.config.limits.redis_prefix}rl:` });
    try {
      await redisReady(limiter.redis, "the rate-limit store", store, startupTimeoutMs);
    } catch (e) {
      await limiter.close();
      throw e;
    }
    return limiter;
  }
  throw new OnbehalfError(
    "ERR_CONFIG_INVALID",
    `limits.store "${store}" is not supported: use memory or redis://host:6379`,
  );
}
