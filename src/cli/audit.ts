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
import {
  type Command,
  configPath,
  EXIT_FINDING,
  EXIT_OK,
  type Io,
  type ParsedArgs,
  text,
  UsageError,
} from "./args.js";
import { withProgress } from "./progress.js";

interface Context {
  readonly store: AuditStore;
  readonly loaded: ReturnType<typeof loadConfigFile>;
  readonly io: Io;
}

/** An audit command: it runs on the store the config names, opened for it and closed after. */
function onStore(
  command: Omit<Command, "run">,
  run: (args: ParsedArgs, context: Context) => Promise<number>,
): Command {
  return {
    ...command,
    async run(args, io) {
      const loaded = loadConfigFile(configPath(args.values.config));
      const store = await openAuditStore(loaded);
      try {
        return await run(args, { store, loaded, io });
      } finally {
        await store.close();
      }
    },
  };
}

export const auditQuery = onStore(
  {
    name: "audit query",
    summary: "records matching every filter given, newest first, as a table or JSON",
    flags: {
      tenant: text("T", "of this tenant"),
      user: text("U", "of this user"),
      tool: text("T", "of calls to this tool"),
      decision: text("D", "with this decision: allow, deny or ask"),
      agent: text("A", "made through this agent"),
      trace: text("ID", "of this run (its W3C trace id)"),
      since: text("ISO", "at or after this time"),
      until: text("ISO", "before this time"),
      limit: text("N", "at most N records"),
      json: { type: "boolean", default: false, help: "print the page as JSON, for scripts" },
    },
  },
  async ({ values }, { store, io }) => {
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
);

export const auditVerify = onStore(
  {
    name: "audit verify",
    summary: "check every log against its signed checkpoints; exit 1 on a finding",
    flags: {
      key: text(
        "VERIFIER_KEY",
        "a published verifier key that must sign each log (default: the config's audit key)",
        {
          multiple: true,
        },
      ),
      checkpoint: text(
        "FILE",
        "a signed checkpoint saved outside the database, to hold the records against",
        {
          multiple: true,
        },
      ),
      log: text("L", "only this log (default: every log in the store)"),
      "allow-unsigned-tail": {
        type: "boolean",
        default: false,
        help: "accept records no checkpoint covers yet, however many",
      },
    },
    notes:
      "A finding names the first bad sequence number of its log: deleted, reordered, edited, forged_checkpoint,\nor unverified (nothing proves the records). On a terminal, progress is drawn on stderr.",
  },
  async ({ values }, { store, loaded, io }) => {
    const audit = loaded.config.audit;
    const report = await withProgress(io.terminal, "verifying", (onProgress) =>
      verifyAudit(store, {
        keys: trustedKeys(values.key, loaded),
        external: checkpointFiles(values.checkpoint),
        unsignedTail: audit.checkpoint_every + audit.batch_size,
        acceptUnsigned: values["allow-unsigned-tail"] === true,
        journal: auditJournalDir(loaded),
        ...(typeof values.log === "string" ? { logs: [values.log] } : {}),
        ...(onProgress === undefined ? {} : { onProgress }),
      }),
    );
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
);

export const auditProof = onStore(
  {
    name: "audit proof",
    operands: ["SEQ"],
    summary: "the inclusion proof of record SEQ against a signed checkpoint, as JSON",
    flags: {
      log: text("L", "the log (default: the config's own)"),
      size: text("N", "against the checkpoint of this size (default: the latest)"),
    },
  },
  async ({ values, positionals }, { store, loaded, io }) => {
    const seq = Number(positionals[0]);
    if (!Number.isSafeInteger(seq) || seq < 1) throw new UsageError("SEQ must be a sequence number ≥ 1");
    const size = typeof values.size === "string" ? Number(values.size) : undefined;
    const log = typeof values.log === "string" ? values.log : auditLogId(loaded);
    io.out(JSON.stringify(await proveInclusion(store, log, seq, size), null, 2));
    return EXIT_OK;
  },
);

export const auditExport = onStore(
  {
    name: "audit export",
    summary: "every record of every log, in sequence order, on stdout for a SIEM",
    flags: {
      format: text("jsonl|otel", "JSON lines (records as stored), or OTLP/JSON log requests", {
        required: true,
      }),
      since: text("ISO", "only records at or after this time"),
    },
    notes: "The count goes to stderr; with stderr a terminal (and stdout not), so does progress.",
  },
  async ({ values }, { store, io }) => {
    const format = values.format;
    if (format !== "jsonl" && format !== "otel") throw new UsageError("--format must be jsonl or otel");
    // Progress on a terminal that also shows the records would tear them apart: only when stdout goes elsewhere.
    const terminal = io.outIsTTY === true ? undefined : io.terminal;
    const count = await withProgress(terminal, "exporting", (onProgress) =>
      exportAudit(
        store,
        {
          format,
          ...(typeof values.since === "string" ? { since: values.since } : {}),
          ...(onProgress === undefined ? {} : { onProgress }),
        },
        (line) => io.out(line.replace(/\n$/, "")),
      ),
    );
    io.err(`exported ${count} records`);
    return EXIT_OK;
  },
);

export const auditKey: Command = {
  name: "audit key",
  summary: "the verifier key auditors check checkpoints with (publish it)",
  flags: {},
  run({ values }, io) {
    const loaded = loadConfigFile(configPath(values.config));
    const key = loadSigningKey(auditKeyPath(loaded), "audit signing key");
    io.out(verifierKeyString(auditLogId(loaded), createPublicKey(key.privateKey)));
    return EXIT_OK;
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
