/**
 * The audit explorer: filters, one row per call with its outcome, server-side pages, export of the filtered set,
 * a live tail; and the run view (every record of one trace, in order).
 */
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { REASON_CODES } from "../../src/decision.js";
import { api, type Me, query } from "./api.js";
import { ErrorNote, isoOf, Verdict, when } from "./ui.js";

export interface AuditRecordJson {
  readonly log: string;
  readonly seq: number;
  readonly kind: string;
  readonly time: string;
  readonly tenant: string | null;
  readonly user: string | null;
  readonly agent: string | null;
  readonly tier: string | null;
  readonly chain: readonly string[];
  readonly tool: string | null;
  readonly args: unknown;
  readonly decision: string;
  readonly reason_code: string;
  readonly reason: string;
  readonly rule: string | null;
  readonly outcome: string;
  readonly trace_id: string | null;
  readonly call_id: string;
  readonly latency_us: number;
  readonly source: string;
}

interface FollowUp {
  readonly kind: string;
  readonly outcome: string;
  readonly decision: string;
  readonly reason_code: string;
}

interface Page {
  readonly records: AuditRecordJson[];
  readonly next_cursor: string | null;
  readonly partial: boolean;
  readonly scanned: number;
  readonly follow_ups: Record<string, FollowUp[]>;
}

const KINDS = ["attempt", "outcome", "approval", "delegation", "admin", "spooled"];
const EMPTY = {
  tenant: "",
  user: "",
  agent: "",
  tool: "",
  decision: "",
  reason: "",
  kind: "attempt",
  trace: "",
  since: "",
  until: "",
};
type Filters = typeof EMPTY;
const PAGE = 50;

export function Explorer({ me, run }: { me: Me; run?: string }) {
  const [draft, setDraft] = useState<Filters>(run === undefined ? EMPTY : { ...EMPTY, kind: "", trace: run });
  const [filters, setFilters] = useState<Filters>(draft);
  const [cursors, setCursors] = useState<(string | undefined)[]>([undefined]);
  const [page, setPage] = useState<Page | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [tail, setTail] = useState(false);
  const [ms, setMs] = useState<number | null>(null);
  const seen = useRef(new Set<string>());

  const params = (f: Filters) => ({
    ...f,
    since: isoOf(f.since),
    until: isoOf(f.until),
  });
  const load = useCallback(async () => {
    const started = performance.now();
    try {
      const p = await api<Page>(
        "GET",
        `/ui/api/audit${query({ ...params(filters), limit: run === undefined ? PAGE : 1000, cursor: cursors[cursors.length - 1] })}`,
      );
      setMs(Math.round(performance.now() - started));
      setPage(p);
      setError(null);
    } catch (e) {
      setError(e);
    }
  }, [filters, cursors, run]);

  useEffect(() => {
    void load();
  }, [load]);
  useEffect(() => {
    if (!tail || cursors.length > 1) return;
    const timer = setInterval(() => void load(), 2000);
    return () => clearInterval(timer);
  }, [tail, cursors, load]);

  const records = page === null ? [] : run === undefined ? page.records : [...page.records].reverse();
  const fresh = new Set(records.map(key).filter((k) => !seen.current.has(k)));
  useEffect(() => {
    for (const r of records) seen.current.add(key(r));
  });
  const common = (name: keyof Filters) => ({
    name,
    value: draft[name],
    onInput: (e: Event) => setDraft({ ...draft, [name]: (e.target as HTMLInputElement).value }),
  });
  const field = (name: keyof Filters, label: string) => (
    <label>
      {label}
      <input
        type="text"
        {...common(name)}
        disabled={name === "tenant" && me.role === "approver"}
        placeholder={name === "tenant" && me.role === "approver" ? (me.tenant ?? "") : ""}
      />
    </label>
  );
  const time = (name: "since" | "until", label: string) => (
    <label>
      {label}
      <input type="datetime-local" {...common(name)} />
    </label>
  );
  const select = (name: keyof Filters, label: string, options: string[], any = "any") => (
    <label>
      {label}
      <select
        name={name}
        value={draft[name]}
        onChange={(e) => setDraft({ ...draft, [name]: (e.target as HTMLSelectElement).value })}
      >
        <option value="">{any}</option>
        {options.map((o) => (
          <option key={o} value={o}>
            {o}
          </option>
        ))}
      </select>
    </label>
  );
  const exportHref = (format: string) => `/ui/api/audit/export${query({ ...params(filters), format })}`;

  return (
    <section aria-labelledby="audit-title">
      <h1 id="audit-title">{run === undefined ? "Audit" : `Run ${run}`}</h1>
      {run === undefined ? (
        <form
          class="filters"
          aria-label="Filters"
          onSubmit={(e) => {
            e.preventDefault();
            setCursors([undefined]);
            setFilters(draft);
          }}
        >
          {field("tenant", "Tenant")}
          {field("user", "User")}
          {field("agent", "Agent")}
          {field("tool", "Tool")}
          {select("decision", "Decision", ["allow", "deny", "ask"])}
          {select("reason", "Reason", [...REASON_CODES])}
          {select("kind", "Records", KINDS, "all")}
          {field("trace", "Trace id")}
          {time("since", "Since")}
          {time("until", "Until")}
          <button type="submit">Filter</button>
        </form>
      ) : (
        <p>
          Every record of this trace, oldest first. <a href="#/audit">Back to the audit</a>
        </p>
      )}
      <div class="toolbar">
        <a href={exportHref("jsonl")} download>
          Export JSONL
        </a>
        <a href={exportHref("csv")} download>
          Export CSV
        </a>
        {run === undefined ? (
          <label class="inline">
            <input
              type="checkbox"
              checked={tail}
              onChange={(e) => setTail((e.target as HTMLInputElement).checked)}
            />{" "}
            Live tail
          </label>
        ) : null}
        {ms === null ? null : (
          <span class="muted" data-testid="page-time">
            page in {ms} ms
          </span>
        )}
      </div>
      <ErrorNote error={error} />
      {page === null ? (
        <p class="muted">Loading…</p>
      ) : (
        <>
          <table class="records">
            <caption class="sr-only">
              Audit records, {run === undefined ? "newest first" : "oldest first"}
            </caption>
            <thead>
              <tr>
                <th scope="col">Time</th>
                <th scope="col">Tenant</th>
                <th scope="col">User</th>
                <th scope="col">Agent chain</th>
                <th scope="col">Tool</th>
                <th scope="col">Decision</th>
                <th scope="col">Reason</th>
                <th scope="col">Outcome</th>
                <th scope="col">Record</th>
              </tr>
            </thead>
            <tbody>
              {records.map((r) => (
                <tr key={key(r)} class={fresh.has(key(r)) && tail ? "fresh" : ""}>
                  <td>{when(r.time)}</td>
                  <td>{r.tenant ?? "—"}</td>
                  <td>{r.user ?? "—"}</td>
                  <td>{r.chain.join(" → ") || "—"}</td>
                  <td>{r.tool ?? "—"}</td>
                  <td>
                    <Verdict value={r.decision} />
                  </td>
                  <td>{r.reason_code}</td>
                  <td>{outcomeOf(r, page.follow_ups[r.call_id])}</td>
                  <td>
                    <a href={`#/audit/record/${encodeURIComponent(r.log)}/${r.seq}`}>
                      {r.kind === "attempt" ? "" : `${r.kind} `}#{r.seq}
                    </a>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          {records.length === 0 ? (
            <p class="muted">No matching records{page.partial ? " in the rows read so far" : ""}.</p>
          ) : null}
          {run === undefined ? (
            <nav class="pager" aria-label="Pages">
              <button
                type="button"
                disabled={cursors.length < 2}
                onClick={() => setCursors(cursors.slice(0, -1))}
              >
                Newer
              </button>
              <span class="muted">
                page {cursors.length}
                {page.partial ? ` (read ${page.scanned} records; more may match further back)` : ""}
              </span>
              <button
                type="button"
                disabled={page.next_cursor === null}
                onClick={() => page.next_cursor !== null && setCursors([...cursors, page.next_cursor])}
              >
                Older
              </button>
            </nav>
          ) : null}
        </>
      )}
    </section>
  );
}

function key(r: AuditRecordJson): string {
  return `${r.log}#${r.seq}`;
}

/** What became of a call: its attempt's outcome, or the outcome or approval recorded after it. */
function outcomeOf(r: AuditRecordJson, later: FollowUp[] | undefined): string {
  const parts = (later ?? []).map((f) => (f.kind === "outcome" ? f.outcome : `${f.kind}: ${f.decision}`));
  return parts.length > 0 ? parts.join(", ") : r.outcome;
}
