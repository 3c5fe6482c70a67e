/** The audit log's configuration: its store, its writer and the key that signs its checkpoints. */
import { z } from "zod";
import { nonEmpty } from "./fields.js";

export const AuditConfig = z.strictObject({
  store: nonEmpty.default("sqlite:./onbehalf.db"),
  durability: z.enum(["batch", "sync"]).default("batch"),
  /** This writer's log id (the checkpoint origin). Default: `onbehalf@<hostname>`. */
  log_id: nonEmpty.regex(/^[^\s+]+$/, "a log id has no spaces and no +").optional(),
  batch_size: z.number().int().positive().default(512),
  /**
   * SQLite file stores: commit on a worker thread of their own (src/audit/sqlite-thread.ts), so commits and the
   * WAL's page writes never hold up requests. Default false.
   */
  writer_thread: z.boolean().default(false),
  flush_ms: z.number().int().min(0).default(5),
  /** Ed25519 key that signs checkpoints; created on first start. */
  signing_key: nonEmpty.default("./keys/audit.jwk"),
  /** Sign a checkpoint every this many records… */
  checkpoint_every: z.number().int().positive().default(1000),
  /** …and every this many seconds when records were added (0: only by count and on shutdown). */
  checkpoint_seconds: z.number().min(0).default(60),
  /**
   * Sign records found after the log's last checkpoint although its last writer stopped cleanly (which signs
   * everything): only after checking them with `audit verify`. Default false: the writer refuses to start.
   */
  resume_unsigned_tail: z.boolean().default(false),
  /**
   * The writer's journal directory, on this host's own disk (not the database's): records whether each log's
   * last writer here stopped cleanly. Default: `<signing_key>.logs`.
   */
  journal: nonEmpty.optional(),
  /**
   * Also send each committed record as an OpenTelemetry log record to this OTLP/HTTP endpoint
   * (`<endpoint>/v1/logs`, JSON), best effort: the store stays the source of truth, and a failed send is
   * counted (`onbehalf_audit_otlp_failed_total`), never waited for.
   *
   * @example
   * otlp: { endpoint: "http://otel-collector:4318", headers: { authorization: "Bearer ${OTLP_TOKEN}" } }
   */
  otlp: z
    .strictObject({
      endpoint: z.string().url(),
      headers: z.record(z.string(), z.string()).default({}),
    })
    .optional(),
});
export type AuditConfig = z.output<typeof AuditConfig>;
