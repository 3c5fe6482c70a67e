/** The audit log's configuration: its store, its writer and the key that signs its checkpoints. */
import { z } from "zod";
import { nonEmpty } from "./fields.js";

export const AuditConfig = z.strictObject({
  store: nonEmpty.default("sqlite:./onbehalf.db"),
  durability: z.enum(["batch", "sync"]).default("batch"),
  /** This writer's log id (the checkpoint origin). Default: `onbehalf@<hostname>`. */
  log_id: nonEmpty.regex(/^[^\s+]+$/, "a log id has no spaces and no +").optional(),
  batch_size: z.number().int().positive().default(512),
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
});
export type AuditConfig = z.output<typeof AuditConfig>;
