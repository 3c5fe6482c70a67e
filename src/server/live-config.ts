/**
 * The live configuration, shared between instances: tenants and tools as the admin API changed them, kept in the
 * state store (Redis) with a version, who changed them and when, and the **base**: a digest of the config file
 * they were made from (its tenants and tools). The rule, at start and whenever another instance shares a change:
 *
 * - nothing stored: the file is in force;
 * - stored, made from this very file (same base): the stored config is in force (the file plus the changes);
 * - stored, made from another file (the file was edited since, or another deployment shares the prefix): at start
 *   the server refuses, unless `server.live_config` says which wins (`file`: the file, and the stored record is
 *   replaced; `stored`: the stored config); while running, such a change is not adopted, and said so.
 */
import { createHash } from "node:crypto";
import { canonicalJson } from "../audit/canonical.js";
import type { Config } from "../config/schema.js";
import { OnbehalfError } from "../errors.js";
import type { LoadedConfig } from "../govern/config.js";
import type { Governor } from "../govern/governor.js";
import type { StateStore } from "./state.js";

/** What the state store keeps. */
export interface LiveRecord {
  readonly version: number;
  /** `sha256:<hex>` of the tenants and tools of the config file the live config was made from. */
  readonly base: string;
  /**
   * The deployment that wrote it: the thumbprint of its server signing key, which every instance of a deployment
   * shares (its delegation tokens verify on any of them) and no other deployment has.
   */
  readonly deployment: string;
  /** `admin:<token fingerprint>`, `file` (started or reloaded from the file). */
  readonly changed_by: string;
  readonly changed_at: string;
  /** The tenants and tools in force (`gov.dynamicConfig()`). */
  readonly snapshot: string;
}

/** Which config is in force, and why. */
export interface LiveState {
  readonly source: "file" | "live";
  readonly version: number;
  readonly base: string;
  readonly changed_by: string;
  readonly changed_at: string;
}

export type LiveConfigMode = "auto" | "file" | "stored";

/**
 * The base of a config: the digest of what the live config replaces, its tenants and tools as the file gives
 * them (validated, defaults filled). What differs between instances of one deployment (ports, log ids) does not
 * count; an edit to the policy in the file does.
 */
export function baseOf(config: Pick<Config, "tenants" | "tools">): string {
  const bytes = canonicalJson({ tenants: config.tenants, tools: config.tools });
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/** The live configuration of one instance: adopted at start, shared on change, followed while running. */
export class LiveConfigShare {
  private state: LiveState;
  /** The record last stored or adopted: what a change expects to replace (compare and set). */
  private stored: string | null = null;
  /** Changes one at a time: each reads the version the previous one wrote. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly gov: Governor,
    private readonly store: StateStore,
    private readonly deployment: string,
    private base: string,
    private readonly warn: (message: string) => void,
    now: () => number,
    /** The base of the config file as it is on disk now (read again), or null when there is none or it does not validate. */
    private readonly fileBase: () => string | null = () => null,
  ) {
    this.state = {
      source: "file",
      version: 0,
      base,
      changed_by: "file",
      changed_at: new Date(now()).toISOString(),
    };
  }

  /** Which config is in force now. */
  get current(): LiveState {
    return this.state;
  }

  /**
   * Decide at start which config is in force (the rule above) and follow other instances' changes. Returns a
   * line saying which and why. Throws `ERR_CONFIG_INVALID` when the stored config was made from another file and
   * `mode` is `auto`.
   */
  async adopt(mode: LiveConfigMode, file: string | undefined): Promise<string> {
    const text = await this.store.loadConfig();
    const stored = parseRecord(text);
    this.stored = text;
    this.store.onConfig((shared) => this.follow(shared));
    const what = file ?? "the config";
    if (stored === null) return `${what} is in force (no live changes are stored)`;
    const when = `version ${stored.version}, changed by ${stored.changed_by} at ${stored.changed_at}`;
    if (stored.deployment !== this.deployment && stored.deployment !== UNKNOWN) {
      throw new OnbehalfError(
        "ERR_CONFIG_INVALID",
        `the live config in the state store (${when}) was written by another deployment (server signing key ${stored.deployment}, this one's is ${this.deployment}): give each deployment sharing a Redis its own limits.redis_prefix`,
      );
    }
    if (stored.base === this.base || mode === "stored") {
      this.apply(stored, text);
      return stored.base === this.base
        ? `the live config is in force (${when}): it was made from ${what} as it is now`
        : `the live config is in force (${when}), as server.live_config: stored says, although it was made from another version of ${what}`;
    }
    if (mode === "file") {
      if (!(await this.save("file", stored.version))) {
        throw new OnbehalfError(
          "ERR_CONFLICT",
          "another instance changed the live config while this one started: start it again",
        );
      }
      return `${what} is in force, as server.live_config: file says; it replaced the live config (${when}), whose changes are in the audit log`;
    }
    throw new OnbehalfError(
      "ERR_CONFIG_INVALID",
      `the live config in the state store (${when}) was made from another version of ${what}, or by another deployment sharing its key prefix: set server.live_config to file (start from ${what}; the live changes are in the audit log) or stored (keep the live config), or give this deployment its own limits.redis_prefix`,
    );
  }

  /**
   * Make a change by `who` (`apply` throws when it does not validate, and nothing changes): audited first, as an
   * admin event with `body`; a change nobody could audit is not made (refused while the store is away, undone
   * when its record does not commit). Other instances learn of it only once it is on record.
   */
  change(who: string, what: string, apply: () => void, body: unknown): Promise<void> {
    const run = this.queue.then(() => this.changeNow(who, what, apply, body));
    this.queue = run.catch(() => {});
    return run;
  }

  private async changeNow(who: string, what: string, apply: () => void, body: unknown): Promise<void> {
    const problem = this.gov.auditLog.problem;
    if (problem !== null) throw new OnbehalfError("ERR_AUDIT_UNAVAILABLE", `not changed: ${problem}`);
    const before = this.gov.dynamicConfig();
    apply();
    const recorded = this.gov.recordAdmin(`${what} (by ${who})`, body, { outcome: "ok" });
    try {
      await this.gov.auditLog.acknowledged(recorded);
    } catch (e) {
      this.gov.applyDynamicConfig(before);
      throw new OnbehalfError("ERR_AUDIT_UNAVAILABLE", `not changed: ${(e as Error).message}`, { cause: e });
    }
    // Shared, or undone: an instance never runs a config the others do not know of.
    let refusal: OnbehalfError | undefined;
    try {
      if (!(await this.save(who, this.state.version))) {
        refusal = new OnbehalfError(
          "ERR_CONFLICT",
          "not changed: another instance changed the live config meanwhile; read it (GET /v1/admin/config) and try again",
        );
      }
    } catch (e) {
      refusal = new OnbehalfError("ERR_LIMITS_UNAVAILABLE", `not changed: ${(e as Error).message}`, {
        cause: e,
      });
    }
    if (refusal !== undefined) {
      this.gov.applyDynamicConfig(before);
      this.gov.recordAdmin(`undone: ${what} (by ${who}): ${refusal.message}`, body, { outcome: "error" });
      throw refusal;
    }
  }

  /**
   * The file was edited (SIGHUP): its tenants and tools replace the config in force, live changes included,
   * and become the base every instance's changes are checked against. `next` is the file, validated. Returns
   * what was done; refuses a file whose other sections changed too (they take a restart).
   */
  async reload(next: LoadedConfig, file: string): Promise<string> {
    // Only tenants and tools apply live. A file whose other sections changed too is refused whole: half of an
    // edit must not go live, and a file cut short while being written usually lost those sections.
    const restart = sectionsOnlyARestartApplies(this.gov.config, next.config);
    if (restart.length > 0) {
      throw new OnbehalfError(
        "ERR_CONFIG_INVALID",
        `${file}: ${restart.join(", ")} changed, which takes effect only on restart: restart the server, or undo that part of the edit and send SIGHUP again (write the file to a temporary name and rename it, so a reload never reads half of it)`,
      );
    }
    const { tenants, tools } = next.config;
    const previous = this.base;
    this.base = baseOf(next.config);
    try {
      await this.change(
        "file",
        `reloaded ${file}`,
        () => this.gov.applyDynamicConfig(JSON.stringify({ tenants, tools })),
        { file, base: this.base },
      );
    } catch (e) {
      this.base = previous;
      throw e;
    }
    return `reloaded ${file}: its tenants and tools are in force (version ${this.state.version})`;
  }

  /** Store the config in force as the next version, unless another instance changed it since (false). */
  private async save(who: string, after: number): Promise<boolean> {
    const record: LiveRecord = {
      version: after + 1,
      base: this.base,
      deployment: this.deployment,
      changed_by: who,
      changed_at: new Date(this.gov.now()).toISOString(),
      snapshot: this.gov.dynamicConfig(),
    };
    const text = JSON.stringify(record);
    if (!(await this.store.saveConfig(text, this.stored))) return false;
    this.stored = text;
    this.state = stateOf(record);
    return true;
  }

  private apply(record: LiveRecord, text: string | null): void {
    this.gov.applyDynamicConfig(record.snapshot);
    this.stored = text;
    this.state = stateOf(record);
  }

  /**
   * Another instance shared a change: adopt it if it was made from this file, or is that instance's reload of
   * this file as it is on disk now (edited since this one started); else say why not.
   */
  private follow(text: string): void {
    const record = parseRecord(text);
    if (record === null) {
      this.warn("ignored a shared config change that is not a live config record");
      return;
    }
    if (record.deployment !== this.deployment) {
      this.warn(
        `ignored a shared config change (version ${record.version}, by ${record.changed_by}): it was written by another deployment (server signing key ${record.deployment}) sharing limits.redis_prefix`,
      );
      return;
    }
    const reloaded =
      record.base !== this.base && record.changed_by === "file" && record.base === this.fileBase();
    if (record.base !== this.base && !reloaded) {
      this.warn(
        `ignored a shared config change (version ${record.version}, by ${record.changed_by}): it was made from another config file than this instance's, or by another deployment sharing limits.redis_prefix`,
      );
      return;
    }
    try {
      this.apply(record, text);
      this.base = record.base;
    } catch (e) {
      this.warn(`ignored a shared config change that does not validate: ${(e as Error).message}`);
    }
  }
}

/** The deployment of a record stored by a version before records named theirs. */
const UNKNOWN = "unknown";

function stateOf(record: LiveRecord): LiveState {
  const { version, base, changed_by, changed_at } = record;
  return { source: changed_by === "file" ? "file" : "live", version, base, changed_by, changed_at };
}

/** The top-level sections of the config, besides tenants and tools, that differ between `now` and `next`. */
function sectionsOnlyARestartApplies(now: Config, next: Config): string[] {
  return (Object.keys(next) as (keyof Config)[]).filter(
    (key) => key !== "tenants" && key !== "tools" && canonicalJson(now[key]) !== canonicalJson(next[key]),
  );
}

function parseRecord(text: string | null): LiveRecord | null {
  if (text === null) return null;
  try {
    const r = JSON.parse(text) as Partial<LiveRecord>;
    if (
      typeof r.version === "number" &&
      typeof r.base === "string" &&
      typeof r.changed_by === "string" &&
      typeof r.changed_at === "string" &&
      typeof r.snapshot === "string"
    ) {
      return { ...(r as LiveRecord), deployment: typeof r.deployment === "string" ? r.deployment : UNKNOWN };
    }
  } catch {}
  // Stored by a version before records had a base: its tenants and tools, from no known file.
  return {
    version: 0,
    base: "unknown",
    deployment: UNKNOWN,
    changed_by: "an earlier version",
    changed_at: "an unknown time",
    snapshot: text,
  };
}
