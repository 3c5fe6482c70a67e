/** The approvals inbox: pending `ask` decisions, the time each has left, approve or deny with a note. */
import { useEffect, useState } from "preact/hooks";
import { api } from "./api.js";
import { ErrorNote, when } from "./ui.js";

interface Approval {
  readonly id: string;
  readonly tenant: string | null;
  readonly user: string;
  readonly email: string | null;
  readonly chain: readonly string[];
  readonly tool: string;
  readonly args: unknown;
  readonly rule: string | null;
  readonly reason: string;
  readonly created_at: string;
  readonly expires_at: string;
}

export function Inbox() {
  const [list, setList] = useState<{ approvals: Approval[]; skew: number } | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [done, setDone] = useState<string | null>(null);
  const [tick, setTick] = useState(Date.now());

  const load = () =>
    api<{ approvals: Approval[]; server_time: string }>("GET", "/ui/api/approvals").then(
      (a) => setList({ approvals: a.approvals, skew: Date.parse(a.server_time) - Date.now() }),
      setError,
    );
  useEffect(() => {
    void load();
    const poll = setInterval(() => void load(), 3000);
    const clock = setInterval(() => setTick(Date.now()), 1000);
    return () => {
      clearInterval(poll);
      clearInterval(clock);
    };
  }, []);

  const decide = async (a: Approval, decision: "approve" | "deny", note: string) => {
    setError(null);
    try {
      await api("POST", `/ui/api/approvals/${encodeURIComponent(a.id)}`, {
        decision,
        ...(note === "" ? {} : { note }),
      });
      setDone(`${decision === "approve" ? "Approved" : "Denied"}: ${a.tool} for ${a.user}`);
      await load();
    } catch (e) {
      setError(e);
    }
  };

  return (
    <section aria-labelledby="inbox-title">
      <h1 id="inbox-title">Approvals</h1>
      <ErrorNote error={error} />
      {done === null ? null : (
        <p class="ok" role="status">
          {done}
        </p>
      )}
      {list === null ? (
        <p class="muted">Loading…</p>
      ) : list.approvals.length === 0 ? (
        <p class="muted">Nothing waits for a decision.</p>
      ) : (
        list.approvals.map((a) => <Card key={a.id} a={a} now={tick + list.skew} onDecide={decide} />)
      )}
    </section>
  );
}

function Card({
  a,
  now,
  onDecide,
}: {
  a: Approval;
  now: number;
  onDecide: (a: Approval, d: "approve" | "deny", note: string) => Promise<void>;
}) {
  const [note, setNote] = useState("");
  const left = Math.max(0, Math.round((Date.parse(a.expires_at) - now) / 1000));
  const noteId = `note-${a.id}`;
  return (
    <article class="approval" aria-label={`${a.tool} for ${a.user}`}>
      <h2>
        {a.tool} <span class="muted">for</span> {a.user}
        {a.email === null ? "" : ` <${a.email}>`}
      </h2>
      <dl>
        <dt>Tenant</dt>
        <dd>{a.tenant ?? "—"}</dd>
        <dt>Agent chain</dt>
        <dd>{a.chain.join(" → ")}</dd>
        <dt>Why it asks</dt>
        <dd>
          {a.rule === null ? "" : `rule ${a.rule}: `}
          {a.reason}
        </dd>
        <dt>Arguments (redacted)</dt>
        <dd>
          <pre>{JSON.stringify(a.args, null, 2)}</pre>
        </dd>
        <dt>Asked</dt>
        <dd>{when(a.created_at)}</dd>
        <dt>Time left</dt>
        <dd class="time-left">
          {Math.floor(left / 60)} min {left % 60} s
        </dd>
      </dl>
      <label for={noteId}>Note (kept in the audit)</label>
      <textarea id={noteId} value={note} onInput={(e) => setNote((e.target as HTMLTextAreaElement).value)} />
      <div class="actions">
        <button type="button" class="approve" onClick={() => void onDecide(a, "approve", note)}>
          Approve
        </button>
        <button type="button" class="deny" onClick={() => void onDecide(a, "deny", note)}>
          Deny
        </button>
      </div>
    </article>
  );
}
