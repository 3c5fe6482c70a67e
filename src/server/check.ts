/**
 * The decision API: `POST /v1/check` (may this human, through this chain of agents, call this tool with these
 * arguments?), `POST /v1/calls/{id}/result` (what happened; the output comes back redacted or blocked),
 * `POST /v1/calls/results` (many results in one request, each answered on its own), and `POST /v1/verify` (who
 * is this token?). Every check is audited, a 401 included.
 */
import type { FastifyInstance, FastifyRequest } from "fastify";
import { z } from "zod";
import { newCallId } from "../audit/call-id.js";
import { safeText, ToolArgs } from "../config/fields.js";
import { Tier } from "../config/policy.js";
import type { DelegationClaims } from "../context/delegation.js";
import { runContextOf } from "../context/run.js";
import { newTraceId, traceIdOf } from "../context/trace.js";
import { REASON_CODES, type ReasonCode } from "../decision.js";
import { OnbehalfError } from "../errors.js";
import type { Approval, StoredApproval } from "../govern/approvals.js";
import { type CallAttempt, publicDecision } from "../govern/pipeline.js";
import type { Principal } from "../identity/principal.js";
import type { ServerContext } from "./context.js";
import { authenticate, type Caller, describeIssues, invalidRequest, parseBody, sendError } from "./http.js";
import { noteCall } from "./request-log.js";
import type { OpenCall } from "./state.js";

export const CheckBody = z.strictObject({
  tool: safeText(),
  /** The tool's arguments: an object (JSON Schema `type: object`, as MCP's `arguments`); `{}` when absent. */
  args: ToolArgs.optional(),
  agent: z.strictObject({ name: safeText(), tier: Tier.optional() }),
  tenant: safeText().optional(),
  trace_id: safeText().optional(),
  /** The approval of this call, once approved: the call is asked again with it. */
  approval: safeText().optional(),
  /**
   * `false`: the caller will not report the call's result (a policy decision point, a check-only client).
   * Nothing is kept for the call; its attempt record says `outcome: unreported`. `"token"`: nothing is kept
   * either, but the answer carries a `report_token` the caller may bring back with the result (the Python
   * client's `check()`). Default `true`: the call waits for its result (`server.pending_call_seconds`).
   */
  report: z.union([z.boolean(), z.literal("token")]).optional(),
  /**
   * The client refused the call on its own (an agent whose hand-off was refused) and reports it: audited as a
   * deny with this code, whatever the policy says; never an allow.
   */
  client_refusal: z
    .strictObject({
      reason_code: z.enum(REASON_CODES).refine((c) => c !== "ok" && c !== "fail_open", {
        message: "a refusal's reason code is a deny code",
      }),
      reason: z.string().max(2000),
    })
    .optional(),
});
export type CheckBody = z.infer<typeof CheckBody>;

const ResultBody = z.strictObject({
  status: z.enum(["ok", "error"]),
  output: z.unknown().optional(),
  error: z.string().max(10_000).optional(),
  /** The `report_token` of a call checked with `"report": "token"` (nothing waits for it on the server). */
  report_token: z.string().max(1_000_000).optional(),
});
type ResultBody = z.infer<typeof ResultBody>;

/**
 * How long the record of a denied or asked call is waited for before the call is answered anyway (a denial
 * stands, an asked call is denied `fail_closed`): well within a client's own timeout (the Python client's is
 * 2 s), so that a store that hangs never leaves such a call unanswered, which a fail-open client would run.
 */
export const UNALLOWED_ACK_MS = 1_000;

/** The most results one `POST /v1/calls/results` takes; more is a 400 (send the rest in another request). */
export const MAX_BATCH_RESULTS = 256;
/** The batch: its items are read one by one (`BatchItem`), so that a bad one is refused on its own. */
const BatchBody = z.strictObject({ results: z.array(z.unknown()) });
/** One result of a batch: the body of `/v1/calls/{id}/result` and the call it is for. */
const BatchItem = ResultBody.extend({ call_id: safeText() });

export function checkRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const decisions = ctx.metrics.counter(
    "onbehalf_decisions_total",
    "Decisions of /v1/check by outcome and reason code.",
    ["decision", "reason_code"],
  );

  app.post("/v1/check", async (req, reply) => {
    // The body is read before the token so that input no store can hold is refused (400) on every path,
    // the unauthenticated one included; a 401 with a valid body is audited with what the body said.
    const parsed = req.body === undefined || req.body === null ? null : CheckBody.safeParse(req.body);
    const refused = parsed?.success === true ? null : bodyRefusal(parsed?.error);
    let caller: Caller;
    try {
      caller = await authenticate(ctx.gov, ctx.issuer, req);
    } catch (e) {
      await auditUnauthenticated(ctx, parsed?.success === true ? parsed.data : null, req, e);
      decisions({ decision: "deny", reason_code: "unauthenticated" });
      return sendError(reply, refused ?? e);
    }
    if (refused !== null) {
      auditRefused(ctx, caller, req, refused); // a known user sent something we refuse: that is audited too
      throw refused;
    }
    const body = (parsed as { data: CheckBody }).data;
    const delegation = caller.delegation;
    const traceId = traceOf(body, req, delegation?.traceId);
    const run = runContextOf(caller.principal, {
      ...chainOf(body, delegation),
      scopes: caller.principal.scopes,
      // a delegation token's signed capabilities: the body cannot name, widen or drop them
      ...(delegation === null ? {} : { capabilities: delegation.capabilities, clients: delegation.clients }),
      ...(body.tenant === undefined ? {} : { tenant: body.tenant }),
      ...(traceId === undefined ? {} : { traceId }),
    });
    const args = body.args ?? {};
    // A call asked again with its approval is decided again with it (see gov.beginApproved); an approval that
    // cannot be taken leaves the call as the policy decides it, with why (ask stays ask, else deny).
    const approved =
      body.approval === undefined || body.client_refusal !== undefined
        ? null
        : await ctx.gov.beginApproved(run, body.tool, args, body.approval);
    const grant = approved !== null && "grant" in approved ? approved.grant : null;
    const attempt =
      approved !== null && "attempt" in approved
        ? approved.attempt
        : await ctx.gov.begin(run, body.tool, args, {
            ...(body.client_refusal === undefined ? {} : { refused: body.client_refusal }),
            ...(body.report === false || body.report === "token" ? { unreported: true } : {}),
            ...(approved === null
              ? {}
              : { unapproved: { reason_code: approved.reason_code, reason: approved.reason } }),
          });
    let approval: Approval | null = grant?.approval ?? null;
    try {
      // Answered only once the attempt record has committed: a decision the caller acts on is on disk, even
      // if this process is killed the next moment (group commit keeps the throughput; see BENCHMARKS.md).
      // A denial or an asked call waits a bounded time (then it is denied as an answer, never as an outage).
      if (attempt.decision.reason_code !== "fail_closed") {
        const bound = attempt.decision.decision === "allow" ? undefined : UNALLOWED_ACK_MS;
        await ctx.gov.auditLog.acknowledged(attempt.seq, bound);
      }
      if (attempt.decision.decision === "ask") approval = await ctx.gov.approvals.open(attempt, args);
      if (attempt.decision.decision !== "deny" && body.report !== false && body.report !== "token")
        await rememberCall(ctx, attempt, approval, grant === null ? undefined : args);
    } catch (e) {
      // A policy deny stays what it is: its record is queued and written when the store is back. (A 503 here
      // would send a fail-open client off to run a call the policy denied.)
      noteCall(req, attempt.fields, caller.principal);
      if (attempt.decision.decision === "deny") {
        decisions({ decision: "deny", reason_code: attempt.decision.reason_code });
        return reply.code(200).send(answer(attempt, null));
      }
      // Allowed or asked, but it could not be made durable or the call remembered: deny, and say so. An asked
      // call is answered 200: the policy wants a human and none can be asked, a denial (a 503 reads as an
      // outage, and a fail-open client would run the call without the approval it needs). An allowed one is a
      // 503: the control plane cannot keep its word, and a fail-open tenant chose to run calls then.
      const asked = attempt.decision.decision === "ask";
      const why = (e as Error).message;
      ctx.gov.finishReported(reportedOf(ctx, openCallOf(attempt, null)), {
        status: "error",
        error: `not run: ${why}`,
      });
      decisions({ decision: "deny", reason_code: "fail_closed" });
      return reply.code(asked ? 200 : 503).send({
        ...answer(attempt, null),
        decision: "deny",
        reason_code: "fail_closed",
        reason: asked ? `the call needs approval, and it cannot be asked for now: ${why}` : why,
      });
    }
    const d = attempt.decision;
    decisions({ decision: d.decision, reason_code: d.reason_code });
    noteCall(req, attempt.fields, caller.principal);
    const answered = answer(attempt, approval);
    if (body.report === "token" && d.decision === "allow") {
      const token = ctx.reportTokens.issue(
        openCallFor(attempt, approval, grant === null ? undefined : args),
        ctx.pendingTtlMs,
      );
      return reply.code(200).send({ ...answered, report_token: token });
    }
    // An outage is a 503 only for a call the policy allowed (a fail-open tenant chose to run those then); one that
    // needed a human is denied (200): a 503 would send a fail-open client off to run it without the approval. A
    // client's own refusal is an answer whatever its code.
    const outage =
      d.reason_code === "fail_closed" && d.policy_verdict !== "ask" && body.client_refusal === undefined;
    return reply.code(outage ? 503 : 200).send(answered);
  });

  app.post<{ Params: { id: string } }>("/v1/calls/:id/result", async (req) => {
    const { principal } = await authenticate(ctx.gov, ctx.issuer, req);
    return takeResult(ctx, principal, req.params.id, parseBody(ResultBody, req.body));
  });

  // Many results in one request (the Python client's background reports): one authentication, one wait for the
  // audit's commit. Each item is judged on its own, as if it came alone to /v1/calls/{id}/result under this
  // bearer, and answered on its own: one bad item never costs the others.
  app.post("/v1/calls/results", async (req) => {
    const { principal } = await authenticate(ctx.gov, ctx.issuer, req);
    const { results } = parseBody(BatchBody, req.body);
    if (results.length > MAX_BATCH_RESULTS) {
      throw new OnbehalfError(
        "ERR_INVALID_ARGUMENT",
        `invalid request: results: a batch holds at most ${MAX_BATCH_RESULTS} results, this one ${results.length}; send the rest in another request`,
      );
    }
    return { results: await Promise.all(results.map((item) => batchItem(ctx, principal, item, req))) };
  });

  app.post("/v1/verify", async (req) => {
    const { principal, delegation } = await authenticate(ctx.gov, ctx.issuer, req);
    return {
      sub: principal.sub,
      user: principal.user,
      tenant: principal.tenant,
      email: principal.email,
      scopes: principal.scopes,
      roles: principal.roles,
      issuer: principal.issuer,
      exp: principal.exp,
      ...(delegation === null
        ? {}
        : {
            chain: delegation.chain,
            tier: delegation.tier,
            tiers: delegation.tiers,
            trace_id: delegation.traceId,
          }),
    };
  });
}

/** What `/v1/calls/{id}/result` answers: the output as the model may see it. */
interface TakenResult {
  readonly call_id: string;
  readonly action: "pass" | "redact" | "block";
  readonly output: unknown;
}

/**
 * Take the result of call `callId`, reported by `principal`: the one path of `/v1/calls/{id}/result` and of each
 * item of `/v1/calls/results`. Throws the `OnbehalfError` the route answers with: 404 (nothing waits for the
 * call, with why), 403 (another user's call, or an approval that refuses it), 409 (reported already), 400 (a
 * report token that is not this call's), 503 (the outcome could not be committed: the output is withheld).
 */
async function takeResult(
  ctx: ServerContext,
  principal: Principal,
  callId: string,
  body: ResultBody,
): Promise<TakenResult> {
  // A call checked with "report": "token" waits nowhere: its report token brings it back, for one report.
  const byToken = body.report_token === undefined ? null : ctx.reportTokens.open(body.report_token, callId);
  const pending = byToken?.call ?? (await ctx.state.getCall(callId));
  if (pending === null) throw new OnbehalfError("ERR_NOT_FOUND", await ctx.pending.notWaiting(callId));
  if (pending.user !== principal.user || pending.tenant !== principal.tenant) {
    throw new OnbehalfError("ERR_POLICY_DENIED", "this call belongs to another user");
  }
  // The call's one report: the waiting call, or the claim of its report token.
  const take = async (): Promise<OpenCall | null> =>
    byToken === null
      ? ctx.state.takeCall(callId)
      : (await ctx.state.claimReport(callId, byToken.expiresAt - Date.now()))
        ? byToken.call
        : null;
  if (pending.approvalId !== null) {
    const refusal = await approvalRefusal(ctx, pending, principal, async () => (await take()) !== null);
    if (refusal !== null) throw refusal;
  }
  const taken = await take();
  if (taken === null) throw alreadyReported(callId);
  // An approved call ran because a human approved it: its outcome record says allow.
  const ran =
    taken.approvalId === null
      ? taken
      : { ...taken, fields: { ...taken.fields, decision: "allow" as const, reason_code: "ok" as const } };
  const done = ctx.gov.finishReported(
    reportedOf(ctx, ran),
    body.status === "ok"
      ? { status: "ok", output: body.output }
      : {
          status: "error",
          error: body.error ?? "error",
          // what the model is shown of the failure, redacted like any output
          ...(body.output === undefined ? {} : { output: body.output }),
        },
  );
  // The output goes back only once its outcome record has committed (else 503: withheld, fail closed).
  await ctx.gov.auditLog.acknowledged(done.seq);
  return {
    call_id: taken.callId,
    action: done.action,
    output: done.action === "block" ? null : (done.output ?? null),
  };
}

function alreadyReported(callId: string): OnbehalfError {
  return new OnbehalfError("ERR_CONFLICT", `the result of call ${callId} was already reported`);
}

/**
 * One item of `/v1/calls/results`, answered as `/v1/calls/{id}/result` would have answered it alone: its HTTP
 * status, and the answer (`action`, `output`) or the error (`{code, message}`).
 */
async function batchItem(ctx: ServerContext, principal: Principal, item: unknown, req: FastifyRequest) {
  const named = (item as { call_id?: unknown } | null)?.call_id;
  const callId = typeof named === "string" ? named : null;
  try {
    const parsed = BatchItem.safeParse(item);
    if (!parsed.success) {
      throw new OnbehalfError(
        "ERR_INVALID_ARGUMENT",
        `invalid result: ${describeIssues(parsed.error, "result")}`,
      );
    }
    const { call_id, ...body } = parsed.data;
    const taken = await takeResult(ctx, principal, call_id, body);
    return { call_id: taken.call_id, status: 200, action: taken.action, output: taken.output };
  } catch (e) {
    if (e instanceof OnbehalfError) return { call_id: callId, status: e.status, ...e.toJSON() };
    req.log.error(e);
    return { call_id: callId, status: 500, error: { code: "ERR_INTERNAL", message: "internal error" } };
  }
}

/** The answer of /v1/check: the decision record as clients see it. */
function answer(attempt: CallAttempt, approval: Approval | null) {
  const d = publicDecision(attempt.decision);
  return {
    call_id: attempt.callId,
    decision: d.decision,
    reason_code: d.reason_code,
    reason: d.reason,
    rule: d.rule,
    layer: d.layer,
    effective_scopes: d.effective_scopes,
    chain: attempt.fields.chain,
    trace_id: attempt.fields.trace_id,
    tenant: d.tenant,
    mode: d.mode,
    fail_mode: d.fail_mode,
    post_transform: d.post_transform,
    shadow: d.shadow,
    ...(attempt.fields.capabilities === undefined ? {} : { capabilities: attempt.fields.capabilities }),
    ...(approval === null
      ? {}
      : {
          approval: {
            id: approval.id,
            status: approval.status,
            expires_at: approval.expires_at,
            url: `/v1/approvals/${approval.id}`,
          },
        }),
  };
}

function openCallOf(attempt: CallAttempt, approval: Approval | null): OpenCall {
  const f = attempt.fields;
  return {
    callId: attempt.callId,
    user: f.user ?? "",
    tenant: f.tenant,
    tool: f.tool ?? "",
    postTransform: attempt.decision.post_transform,
    redact: attempt.decision.redact,
    fields: f,
    startedAt: Date.now(),
    approvalId: approval?.id ?? null,
  };
}

/** The call as it waits for its result: an approved call with what deciding it again at its report needs. */
function openCallFor(attempt: CallAttempt, approval: Approval | null, approvedArgs: unknown): OpenCall {
  const pending = openCallOf(attempt, approval);
  return approvedArgs === undefined
    ? pending
    : {
        ...pending,
        args: approvedArgs,
        scopes: attempt.run === undefined ? [] : [...attempt.run.scopes],
        ...(attempt.run === undefined || attempt.run.capabilities.length === 0
          ? {}
          : { capabilities: attempt.run.capabilities }),
      };
}

async function rememberCall(
  ctx: ServerContext,
  attempt: CallAttempt,
  approval: Approval | null,
  approvedArgs: unknown,
): Promise<void> {
  const evicted = await ctx.state.putCall(
    openCallFor(attempt, approval, approvedArgs),
    approval === null ? ctx.pendingTtlMs : ctx.approvalTtlMs + ctx.pendingTtlMs,
  );
  ctx.pending.evictedCalls(evicted);
}

function reportedOf(ctx: ServerContext, pending: OpenCall) {
  return {
    fields: pending.fields,
    tool: ctx.gov.policy.tools.get(pending.tool),
    postTransform: pending.postTransform,
    redact: pending.redact,
    latencyUs: Math.max(0, (Date.now() - pending.startedAt) * 1000),
  };
}

/**
 * The result of a call that needed approval. The call's own asking entry (never asked again with its approval)
 * is refused: an approved call runs only after `/v1/check` with its approval decided it again. A call that ran
 * under an approval is decided again now: if the policy in force denies it (a revocation since), its output is
 * withheld, and that is audited. Denied or expired approvals are refused, audited. `take` takes the call's one
 * report (the waiting call, or a report token's claim): a refusal uses it up, so a refused report is audited
 * once and cannot be sent again, by token or not.
 */
async function approvalRefusal(
  ctx: ServerContext,
  pending: OpenCall,
  principal: Principal,
  take: () => Promise<boolean>,
): Promise<OnbehalfError | null> {
  const f = pending.fields;
  const refuse = async (reason_code: ReasonCode, reason: string, outcome: "none" | "blocked" = "none") => {
    if (!(await take())) return alreadyReported(pending.callId);
    const seq = ctx.gov.recordEvent({
      ...f,
      kind: "outcome",
      decision: "deny",
      reason_code,
      reason,
      outcome,
    });
    await ctx.gov.auditLog.acknowledged(seq);
    return new OnbehalfError("ERR_POLICY_DENIED", `${reason_code}: ${reason}`);
  };
  const approval = await ctx.gov.approvals.get(pending.approvalId ?? "");
  if (pending.args !== undefined) {
    // It ran under an approval: the policy in force still wins.
    const again = ctx.gov.approvals.decideAgain(
      { ...(approval as StoredApproval), request: { ...requestOf(pending), principal } },
      principal,
    );
    if (again.decision !== "deny") return null;
    return refuse(
      again.reason_code,
      `output withheld: the policy in force denies the call now (${again.reason})`,
      "blocked",
    );
  }
  switch (approval?.status) {
    case "pending":
      return new OnbehalfError(
        "ERR_APPROVAL_REQUIRED",
        "the call is still waiting for approval: poll its approval first",
      );
    case "approved":
    case "used":
      return new OnbehalfError(
        "ERR_APPROVAL_REQUIRED",
        "an approved call must be asked again with its approval (POST /v1/check with approval) before it runs",
      );
    case "denied":
    case "revoked":
      return refuse(
        "approval_denied",
        `denied by ${approval.decided_by ?? "an approver"}${approval.note ? `: ${approval.note}` : ""}`,
      );
    default:
      return refuse("approval_expired", "nobody approved the call in time");
  }
}

/** What deciding a reported call again needs: its chain, tier, scopes and arguments as they were. */
function requestOf(pending: OpenCall) {
  return {
    chain: pending.fields.chain,
    tier: (pending.fields.tier ?? "interactive") as Tier,
    scopes: pending.scopes ?? [],
    args: pending.args,
    ...(pending.capabilities === undefined ? {} : { capabilities: pending.capabilities }),
  };
}

/** A request refused as malformed, from a known user: audited as a denied attempt with reason error. */
function auditRefused(ctx: ServerContext, caller: Caller, req: FastifyRequest, e: unknown): void {
  const raw = (req.body ?? {}) as Record<string, unknown>;
  const p = caller.principal;
  try {
    ctx.gov.recordEvent({
      kind: "attempt",
      tenant: p.tenant,
      user: p.user,
      email: p.email,
      // a delegation token's agent is the one it signs, whatever the refused body says; else what the body
      // named, cut as the tool's name is
      agent:
        caller.delegation?.chain.at(-1) ??
        (typeof raw["agent"] === "object" && raw["agent"] !== null
          ? String((raw["agent"] as { name?: unknown }).name ?? "").slice(0, 200) || null
          : null),
      tier: null,
      chain: caller.delegation?.chain ?? [],
      tool: typeof raw["tool"] === "string" ? raw["tool"].slice(0, 200) : null,
      args_digest: null,
      args: null,
      decision: "deny",
      reason_code: "error",
      reason: e instanceof Error ? e.message : "invalid request",
      rule: null,
      outcome: "none",
      trace_id: traceIdOf(req.headers.traceparent) ?? caller.delegation?.traceId ?? null,
      call_id: newCallId(),
    });
  } catch {
    // the audit being unavailable does not change the 400
  }
}

/** The 400 for a /v1/check body that is missing or does not validate. */
function bodyRefusal(error: z.ZodError | undefined): OnbehalfError {
  return error === undefined
    ? new OnbehalfError(
        "ERR_INVALID_ARGUMENT",
        "the request needs a JSON body (Content-Type: application/json)",
      )
    : invalidRequest(error);
}

/** A 401 is an attempt too: audit it with whatever the body says, no user, and why the token failed. */
async function auditUnauthenticated(
  ctx: ServerContext,
  body: CheckBody | null,
  req: FastifyRequest,
  e: unknown,
): Promise<void> {
  const why = e instanceof OnbehalfError ? `${e.code}: ${e.message}` : "the token could not be verified";
  await ctx.gov
    .begin(undefined, body?.tool ?? "(unreadable request)", body?.args ?? {}, {
      unauthenticated: why,
      traceId: (body === null ? undefined : traceOf(body, req, null)) ?? newTraceId(),
    })
    .catch(() => {}); // the audit being down is answered by the 401 anyway
}

/**
 * The chain a check is decided for: a delegation token's, signed, else the one agent the body names. A client's
 * refusal of an agent the token does not name (a hand-off it refused) names that agent after the signed chain:
 * the record says who was refused, and it can only ever be a deny.
 */
function chainOf(
  body: CheckBody,
  delegation: DelegationClaims | null,
): { chain: readonly string[]; tier: Tier; tiers?: readonly Tier[] } {
  const own = body.agent.tier ?? "interactive";
  if (delegation === null) return { chain: [body.agent.name], tier: own };
  const { chain, tier, tiers } = delegation;
  if (body.client_refusal === undefined || chain.at(-1) === body.agent.name) return { chain, tier, tiers };
  const refused = body.agent.tier ?? "subagent";
  return { chain: [...chain, body.agent.name], tier: refused, tiers: [...tiers, refused] };
}

/**
 * The trace a check belongs to: the one the body names, else the `traceparent` header's, else its delegation
 * token's (undefined: the run makes a new one).
 */
function traceOf(
  body: CheckBody,
  req: FastifyRequest,
  delegated: string | null | undefined,
): string | undefined {
  return body.trace_id ?? traceIdOf(req.headers.traceparent) ?? delegated ?? undefined;
}
