/**
 * `onbehalf audit query | verify | proof | export | key`: read, check and ship the audit log the config names.
 */
import { createPublicKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseVerifierKey, type TrustedKey, verifierKeyString } from "../audit/checkpoint.js";
import { exportAudit } from "../audit/export.js";
import { proveInclusion } from "../audit/proof.js";
import type { AuditRecord } from "../audit/record.js";
import type { AuditQuery, AuditStore } from "../audit/store.js";
import { verifyAudit } from "../audit/verify.js";
import { auditJournalDir, auditKeyPath, auditLogId, openAuditStore } from "../govern/bootstrap.js";
import { loadConfigFile } from "../govern/config.js";
import { loadSigningKey } from "../identity/keys.js";
import { escapeUnsafeText } from "../text.js";
import { configPath, EXIT_FINDING, EXIT_OK, type Io, type ParsedArgs, parse, UsageError } from "./args.js";

export const AUDIT_USAGE = `usage:
  onbehalf audit query [--tenant T] [--user U] [--tool T] [--decision D] [--agent A] [--trace ID]
                       [--since ISO] [--until ISO] [--limit N] [--json]
  onbehalf audit verify [--key VERIFIER_KEY ...] [--checkpoint FILE ...] [--log L] [--allow-unsigned-tail]
                       exit 1 names the first bad sequence number, or a log nothing proves
  onbehalf audit proof SEQ [--log L] [--size N]             inclusion proof against a signed checkpoint
  onbehalf audit export --format jsonl|otel [--since ISO]   every record, for a SIEM
  onbehalf audit key                                        the verifier key auditors check checkpoints with`;

export async function auditCommand(argv: string[], io: Io): Promise<number> {
  const [sub, ...rest] = argv;
  const command = sub === undefined ? undefined : COMMANDS[sub];
  if (command === undefined) {
    throw new UsageError(
      sub === undefined ? "audit needs a subcommand" : `unknown audit subcommand "${sub}"`,
    );
  }
  const args = parse(rest, command.flags);
  const loaded = loadConfigFile(configPath(args.values.config));
  const store = await openAuditStore(loaded);
  try {
    return await command.run(args, { store, loaded, io });
  } finally {
    await store.close();
  }
}

interface Context {
  readonly store: AuditStore;
  readonly loaded: ReturnType<typeof loadConfigFile>;
  readonly io: Io;
}

const text = { type: "string" } as const;

const COMMANDS: Record<
  string,
  { flags: Parameters<typeof parse>[1]; run: (a: ParsedArgs, c: Context) => Promise<number> }
> = {
  query: {
    flags: {
      tenant: text,
      user: text,
      tool: text,
      decision: text,
      agent: text,
      trace: text,
      since: text,
      until: text,
      limit: text,
      json: { type: "boolean", default: false },
    },
    async run({ values }, { store, io }) {
      const q: Record<string, string | number> = {};
      for (const f of ["tenant", "user", "tool", "decision", "agent", "since", "until"] as const) {
        if (typeof values[f] === "string") q[f] = values[f];
      }
      if (typeof values.trace === "string") q["trace_id"] = values.trace;
      if (typeof values.limit === "string") {
        const n = Number(values.limit);
        if (!Number.isInteger(n) || n < 1) throw new UsageError("--limit must be a positive integer");
        q["limit"] = n;
      }
      const page = await store.query(q as AuditQuery);
      if (values.json === true) io.out(JSON.stringify(page, null, 2));
      else io.out(table(page.records));
      return EXIT_OK;
    },
  },
  verify: {
    flags: {
      key: { type: "string", multiple: true },
      checkpoint: { type: "string", multiple: true },
      log: text,
      "allow-unsigned-tail": { type: "boolean", default: false },
    },
    async run({ values }, { store, loaded, io }) {
      const audit = loaded.config.audit;
      const report = await verifyAudit(store, {
        keys: trustedKeys(values.key, loaded),
        external: checkpointFiles(values.checkpoint),
        unsignedTail: audit.checkpoint_every + audit.batch_size,
        acceptUnsigned: values["allow-unsigned-tail"] === true,
        journal: auditJournalDir(loaded),
        ...(typeof values.log === "string" ? { logs: [values.log] } : {}),
      });
      for (const log of report.logs) {
        if (log.finding === null) {
          io.out(
            `ok    ${log.log}: ${log.records} records, ${log.verifiedCheckpoints} of ${log.checkpoints} checkpoints verified, root ${log.root}`,
          );
        } else {
          io.out(`FAIL  ${log.log}: seq ${log.finding.seq}: ${log.finding.problem}: ${log.finding.message}`);
        }
      }
      if (report.logs.length === 0) io.out("no audit records");
      return report.ok ? EXIT_OK : EXIT_FINDING;
    },
  },
  proof: {
    flags: { log: text, size: text },
    async run({ values, positionals }, { store, loaded, io }) {
      const seq = Number(positionals[0]);
      if (!Number.isSafeInteger(seq) || seq < 1)
        throw new UsageError("audit proof needs a sequence number SEQ ≥ 1");
      const size = typeof values.size === "string" ? Number(values.size) : undefined;
      const log = typeof values.log === "string" ? values.log : auditLogId(loaded);
      io.out(JSON.stringify(await proveInclusion(store, log, seq, size), null, 2));
      return EXIT_OK;
    },
  },
  export: {
    flags: { format: text, since: text },
    async run({ values }, { store, io }) {
      const format = values.format;
      if (format !== "jsonl" && format !== "otel") throw new UsageError("--format must be jsonl or otel");
      const count = await exportAudit(
        store,
        { format, ...(typeof values.since === "string" ? { since: values.since } : {}) },
        (line) => io.out(line.replace(/\n$/, "")),
      );
      io.err(`exported ${count} records`);
      return EXIT_OK;
    },
  },
  key: {
    flags: {},
    async run(_args, { loaded, io }) {
      const key = loadSigningKey(auditKeyPath(loaded), "audit signing key");
      io.out(verifierKeyString(auditLogId(loaded), createPublicKey(key.privateKey)));
      return EXIT_OK;
    },
  },
};

/**
 * The keys whose signatures count: the published verifier keys given with --key (an auditor's way: every log
 * must be signed by one of them), else the public half of the config's audit key (never created here).
 */
function trustedKeys(keys: unknown, loaded: Context["loaded"]): TrustedKey[] {
  if (Array.isArray(keys) && keys.length > 0) return keys.map((k) => parseVerifierKey(String(k)));
  return [createPublicKey(loadSigningKey(auditKeyPath(loaded), "audit signing key").privateKey)];
}

/** Signed checkpoints saved outside the database (one signed note per file). */
function checkpointFiles(files: unknown): string[] {
  if (!Array.isArray(files)) return [];
  return files.map((f) => {
    try {
      return readFileSync(String(f), "utf8");
    } catch (e) {
      throw new UsageError(`cannot read checkpoint file ${String(f)}: ${(e as Error).message}`);
    }
  });
}

function table(records: readonly AuditRecord[]): string {
  if (records.length === 0) return "no matching records";
  // Everything a caller could have chosen is escaped: a control character must not drive the terminal.
  const rows = records.map((r) =>
    [
      r.time.replace("T", " ").replace("Z", ""),
      `${r.log}#${r.seq}`,
      r.user ?? "-",
      r.chain.join(">") || "-",
      r.tool ?? "-",
      `${r.decision}/${r.reason_code}`,
      r.outcome,
    ].map(escapeUnsafeText),
  );
  const head = ["time", "record", "user", "chain", "tool", "decision", "outcome"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join("  ")
      .trimEnd();
  return [line(head), ...rows.map(line)].join("\n");
}
