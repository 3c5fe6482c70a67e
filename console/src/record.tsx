/**
 * One record: who, which agent chain, the redacted arguments, what decided, how long it took; and its inclusion
 * proof, checked here in the browser against the signed checkpoint and the published verifier key.
 */
import { useEffect, useState } from "preact/hooks";
import { api } from "./api.js";
import type { AuditRecordJson } from "./explorer.js";
import { ErrorNote, Verdict, when } from "./ui.js";
import { type InclusionProofJson, type ProofResult, verifyProof } from "./verify.js";

type Answer =
  | { readonly covered: true; readonly proof: InclusionProofJson }
  | {
      readonly covered: false;
      readonly why: string;
      readonly checkpoint_seconds: number;
      readonly record: AuditRecordJson;
    };

export function RecordView({ log, seq }: { log: string; seq: number }) {
  const [answer, setAnswer] = useState<Answer | null>(null);
  const [key, setKey] = useState("");
  const [result, setResult] = useState<ProofResult | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    api<{ verifier_key: string }>("GET", "/ui/api/audit/key").then(
      (k) => setKey((old) => old || k.verifier_key),
      setError,
    );
  }, []);
  useEffect(() => {
    api<Answer>("GET", `/ui/api/audit/records/${encodeURIComponent(log)}/${seq}`).then(setAnswer, setError);
  }, [log, seq, attempt]);
  useEffect(() => {
    // Not yet under a signed checkpoint: ask again until the next one is signed.
    if (answer?.covered !== false) return;
    const timer = setTimeout(() => setAttempt((n) => n + 1), 5000);
    return () => clearTimeout(timer);
  }, [answer]);
  useEffect(() => {
    setResult(null);
    if (answer?.covered !== true || key === "") return;
    let live = true;
    void verifyProof(answer.proof, key).then((r) => live && setResult(r));
    return () => {
      live = false;
    };
  }, [answer, key]);

  const r = (
    answer === null ? null : answer.covered ? answer.proof.record : answer.record
  ) as AuditRecordJson | null;
  return (
    <section aria-labelledby="record-title">
      <h1 id="record-title">
        Record {log} #{seq}
      </h1>
      <p>
        <a href="#/audit">Back to the audit</a>
      </p>
      <ErrorNote error={error} />
      {r === null ? null : (
        <>
          <div class="proof" aria-live="polite" data-testid="proof-status">
            {answer?.covered === false ? (
              <p class="pending">
                Not yet covered by a signed checkpoint ({answer.why}). One is signed at least every{" "}
                {answer.checkpoint_seconds} s; this page checks again by itself.
              </p>
            ) : result === null ? (
              <p class="muted">Checking the proof…</p>
            ) : result.ok ? (
              <p class="verified">
                <strong>verified</strong>: this record is leaf {seq - 1} of the tree of {result.size} records
                whose root {result.root} is signed by {result.signer}, checked in this browser.
              </p>
            ) : (
              <p class="failed">
                <strong>does not verify</strong>: {result.why}
              </p>
            )}
          </div>
          <label class="block">
            Verifier key (published with <code>onbehalf audit key</code>; paste your own copy to check against
            it)
            <input
              name="verifier-key"
              value={key}
              onInput={(e) => setKey((e.target as HTMLInputElement).value.trim())}
            />
          </label>
          <dl class="record">
            <dt>Time</dt>
            <dd>
              {when(r.time)} <span class="muted">({r.time})</span>
            </dd>
            <dt>Kind</dt>
            <dd>{r.kind}</dd>
            <dt>Tenant</dt>
            <dd>{r.tenant ?? "—"}</dd>
            <dt>User</dt>
            <dd>{r.user ?? "— (unauthenticated)"}</dd>
            <dt>Agent chain</dt>
            <dd>
              {r.chain.join(" → ") || "—"}
              {r.tier === null ? "" : ` (tier ${r.tier})`}
            </dd>
            <dt>Tool</dt>
            <dd>{r.tool ?? "—"}</dd>
            <dt>Decision</dt>
            <dd>
              <Verdict value={r.decision} /> {r.reason_code}: {r.reason}
            </dd>
            <dt>Rule</dt>
            <dd>{r.rule ?? "— (decided by the permission layers, named in the reason)"}</dd>
            <dt>Outcome</dt>
            <dd>{r.outcome}</dd>
            <dt>Latency</dt>
            <dd>{(r.latency_us / 1000).toFixed(3)} ms</dd>
            <dt>Trace</dt>
            <dd>
              {r.trace_id === null ? (
                "—"
              ) : (
                <a href={`#/audit/run/${encodeURIComponent(r.trace_id)}`}>{r.trace_id} (the whole run)</a>
              )}
            </dd>
            <dt>Call id</dt>
            <dd>{r.call_id}</dd>
            <dt>Source</dt>
            <dd>{r.source}</dd>
            <dt>Arguments (redacted)</dt>
            <dd>
              <pre>{JSON.stringify(r.args, null, 2)}</pre>
            </dd>
          </dl>
        </>
      )}
    </section>
  );
}
