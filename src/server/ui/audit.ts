/**
 * The audit explorer's API (`/ui/api/audit*`): pages of records with each call's later records (its outcome,
 * its approval), one record's inclusion proof and the signed checkpoint it leads to, the published verifier
 * key, and export of the filtered set as JSONL or CSV. An approver's every query is held to their tenant; a
 * record of another tenant is "not found", as if it did not exist.
 */
import { Readable } from "node:stream";
import type { FastifyInstance } from "fastify";
import { z } from "zod";
import { proveInclusion } from "../../audit/proof.js";
import type { AuditRecord } from "../../audit/record.js";
import { recordFromRow } from "../../audit/sql.js";
import type { AuditQuery } from "../../audit/store.js";
import { REASON_CODES } from "../../decision.js";
import { OnbehalfError } from "../../errors.js";
import type { ServerContext } from "../context.js";
import { parseBody } from "../http.js";
import { consolePage, csvLine, everyRecord, type RecordFilter } from "./audit-query.js";
import type { ConsoleSession } from "./session.js";
import type { ConsoleAuth } from "./sign-in.js";

const KINDS = ["attempt", "outcome", "approval", "delegation", "admin", "spooled"] as const;
const blank = (v: unknown) => (v === "" ? undefined : v);
const text = z.preprocess(blank, z.string().max(512).optional());

const Filters = z.strictObject({
  tenant: text,
  user: text,
  agent: text,
  tool: text,
  decision: z.preprocess(blank, z.enum(["allow", "deny", "ask"]).optional()),
  reason: z.preprocess(blank, z.enum(REASON_CODES).optional()),
  kind: z.preprocess(blank, z.enum(KINDS).optional()),
  trace: text,
  since: text,
  until: text,
});
const PageQuery = Filters.extend({
  limit: z.coerce.number().int().min(1).max(1000).default(50),
  cursor: text,
});
const ExportQuery = Filters.extend({ format: z.enum(["jsonl", "csv"]) });

/** Calls whose later records (outcome, approval) a page looks up: at most this many per page. */
const FOLLOW_UPS = 200;

export function consoleAuditRoutes(
  app: FastifyInstance,
  ctx: ServerContext,
  auth: ConsoleAuth,
  verifierKey: string,
): void {
  app.get("/ui/api/audit", async (req, reply) => {
    const session = await auth.require(req);
    const { limit, cursor, ...filters } = parseBody(PageQuery, req.query ?? {});
    const [q, filter] = scoped(session, filters);
    await ctx.gov.flush();
    const page = await consolePage(
      ctx.gov.auditStore,
      cursor === undefined ? q : { ...q, cursor },
      filter,
      limit,
    );
    reply.header("cache-control", "no-store");
    return { ...page, follow_ups: await followUps(ctx, session, page.records) };
  });

  app.get<{ Params: { log: string; seq: string } }>("/ui/api/audit/records/:log/:seq", async (req, reply) => {
    const session = await auth.require(req);
    const seq = Number(req.params.seq);
    if (!Number.isSafeInteger(seq) || seq < 1)
      throw new OnbehalfError("ERR_INVALID_ARGUMENT", "seq must be a positive integer");
    reply.header("cache-control", "no-store");
    const [row] = await ctx.gov.auditStore.rows(req.params.log, seq, 1);
    if (row === undefined || row.seq !== seq || !visible(session, row.columns.tenant)) {
      throw new OnbehalfError("ERR_NOT_FOUND", `no record ${seq} in log ${req.params.log}`);
    }
    try {
      // The proof with the record as stored; the browser recomputes its leaf hash and checks the signature.
      return { proof: await proveInclusion(ctx.gov.auditStore, req.params.log, seq), covered: true };
    } catch (e) {
      if (!(e instanceof OnbehalfError) || e.code !== "ERR_INVALID_ARGUMENT") throw e;
      return {
        covered: false,
        why: e.message,
        checkpoint_seconds: ctx.gov.config.audit.checkpoint_seconds,
        record: recordFromRow(row.canonical, row.leafHash),
      };
    }
  });

  app.get("/ui/api/audit/key", async (req) => {
    await auth.require(req);
    return { verifier_key: verifierKey, log: ctx.gov.auditLog.logId };
  });

  app.get("/ui/api/audit/export", async (req, reply) => {
    const session = await auth.require(req);
    const { format, ...filters } = parseBody(ExportQuery, req.query ?? {});
    const [q, filter] = scoped(session, filters);
    await ctx.gov.flush();
    const records = everyRecord(ctx.gov.auditStore, q, filter);
    async function* lines() {
      if (format === "csv") yield csvLine(null);
      for await (const r of records) yield format === "csv" ? csvLine(r) : `${JSON.stringify(r)}\n`;
    }
    return reply
      .header("cache-control", "no-store")
      .header("content-disposition", `attachment; filename="onbehalf-audit.${format}"`)
      .type(format === "csv" ? "text/csv; charset=utf-8" : "application/x-ndjson")
      .send(Readable.from(lines()));
  });
}

/** The store query and the row filter of the explorer's filters, held to the approver's tenant. */
function scoped(session: ConsoleSession, f: z.output<typeof Filters>): [AuditQuery, RecordFilter] {
  if (session.role === "approver" && f.tenant !== undefined && f.tenant !== session.tenant) {
    throw new OnbehalfError(
      "ERR_POLICY_DENIED",
      `an approver of tenant ${session.tenant} sees only that tenant's records`,
    );
  }
  const tenant = session.role === "approver" ? (session.tenant ?? undefined) : f.tenant;
  if (session.role === "approver" && tenant === undefined) {
    throw new OnbehalfError("ERR_POLICY_DENIED", "an approver without a tenant sees no records");
  }
  const q: AuditQuery = Object.fromEntries(
    Object.entries({
      tenant,
      user: f.user,
      agent: f.agent,
      tool: f.tool,
      decision: f.decision,
      trace_id: f.trace,
      since: f.since,
      until: f.until,
    }).filter(([, v]) => v !== undefined),
  );
  const filter: RecordFilter = {
    ...(f.reason === undefined ? {} : { reason_code: f.reason }),
    ...(f.kind === undefined ? {} : { kind: f.kind }),
  };
  return [q, filter];
}

function visible(session: ConsoleSession, tenant: string | null): boolean {
  return session.role === "admin" || (tenant !== null && tenant === session.tenant);
}

/** The later records of each call on the page (its outcome, approval): by call id, oldest first. */
async function followUps(ctx: ServerContext, session: ConsoleSession, records: readonly AuditRecord[]) {
  const out: Record<
    string,
    { kind: string; outcome: string; decision: string; reason_code: string; time: string }[]
  > = {};
  const calls = [...new Set(records.filter((r) => r.kind === "attempt").map((r) => r.call_id))].slice(
    0,
    FOLLOW_UPS,
  );
  for (const call_id of calls) {
    const page = await ctx.gov.auditStore.query({ call_id, limit: 20 });
    const later = page.records
      .filter((r) => r.kind !== "attempt" && visible(session, r.tenant))
      .reverse()
      .map((r) => ({
        kind: r.kind,
        outcome: r.outcome,
        decision: r.decision,
        reason_code: r.reason_code,
        time: r.time,
      }));
    if (later.length > 0) out[call_id] = later;
  }
  return out;
}
