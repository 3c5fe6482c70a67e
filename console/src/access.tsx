/**
 * Who can do what: a tenant's users × tools × tiers, decided by the engine of `policy explain`; and the what-if:
 * a draft of the tenant's policy replayed against its last calls, showing which decisions would change. Nothing
 * is saved here.
 */
import { useEffect, useState } from "preact/hooks";
import { api, query } from "./api.js";
import { ErrorNote, Verdict, when } from "./ui.js";

interface Tenant {
  readonly id: string;
  readonly policy: unknown;
}
interface Cell {
  readonly user: string;
  readonly tool: string;
  readonly tier: string;
  readonly decision: string;
  readonly reason_code: string;
  readonly reason: string;
  readonly layer: string | null;
  readonly rules: readonly { id: string; effect: string; when: string }[];
}
interface Matrix {
  readonly users: readonly { user: string; scopes: string }[];
  readonly tools: readonly string[];
  readonly tiers: readonly string[];
  readonly cells: readonly Cell[];
}
interface ReplayVerdict {
  readonly decision: string;
  readonly reason_code: string;
  readonly reason: string;
  readonly rule: string | null;
}
interface WhatIf {
  readonly replayed: number;
  readonly changed: readonly {
    call: {
      log: string;
      seq: number;
      time: string;
      user: string;
      tool: string;
      chain: string[];
      decision: string;
    };
    now: ReplayVerdict;
    draft: ReplayVerdict;
  }[];
}

export function Access() {
  const [tenants, setTenants] = useState<Tenant[]>([]);
  const [tenant, setTenant] = useState("");
  const [tier, setTier] = useState("interactive");
  const [matrix, setMatrix] = useState<Matrix | null>(null);
  const [draft, setDraft] = useState("");
  const [last, setLast] = useState(500);
  const [whatIf, setWhatIf] = useState<WhatIf | null>(null);
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    api<{ tenants: Tenant[] }>("GET", "/ui/api/policy/tenants").then((t) => {
      setTenants(t.tenants);
      if (t.tenants[0] !== undefined) setTenant(t.tenants[0].id);
    }, setError);
  }, []);
  useEffect(() => {
    if (tenant === "") return;
    setWhatIf(null);
    setDraft(JSON.stringify(tenants.find((t) => t.id === tenant)?.policy ?? {}, null, 2));
    api<Matrix>("GET", `/ui/api/policy/matrix${query({ tenant })}`).then(setMatrix, setError);
  }, [tenant, tenants]);

  const evaluate = async () => {
    setError(null);
    setWhatIf(null);
    try {
      const policy = JSON.parse(draft) as unknown;
      setWhatIf(await api<WhatIf>("POST", "/ui/api/policy/whatif", { tenant, policy, last }));
    } catch (e) {
      setError(e);
    }
  };
  const cell = (user: string, tool: string) =>
    matrix?.cells.find((c) => c.user === user && c.tool === tool && c.tier === tier);

  return (
    <section aria-labelledby="access-title">
      <h1 id="access-title">Who can do what</h1>
      <div class="toolbar">
        <label>
          Tenant
          <select
            name="tenant"
            value={tenant}
            onChange={(e) => setTenant((e.target as HTMLSelectElement).value)}
          >
            {tenants.map((t) => (
              <option key={t.id} value={t.id}>
                {t.id}
              </option>
            ))}
          </select>
        </label>
        <label>
          Tier
          <select name="tier" value={tier} onChange={(e) => setTier((e.target as HTMLSelectElement).value)}>
            {(matrix?.tiers ?? ["interactive"]).map((t) => (
              <option key={t} value={t}>
                {t}
              </option>
            ))}
          </select>
        </label>
      </div>
      <ErrorNote error={error} />
      {matrix === null ? null : (
        <table class="matrix">
          <caption>
            Each cell: what a call with no special arguments gets, and why: the reason code, the cell that
            decided, and the rules that may still ask or deny (hover for the full reason). A user the tenant's
            directory lists with scopes is decided with those; others as if their token held each tool's
            required scopes.
          </caption>
          <thead>
            <tr>
              <th scope="col">User</th>
              {matrix.tools.map((t) => (
                <th key={t} scope="col">
                  {t}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {matrix.users.map((u) => (
              <tr key={u.user}>
                <th scope="row">{u.user}</th>
                {matrix.tools.map((t) => {
                  const c = cell(u.user, t);
                  if (c === undefined) return <td key={t}>—</td>;
                  const rules = c.rules.map((r) => `${r.effect} by rule ${r.id} when ${r.when}`).join("; ");
                  return (
                    <td key={t} title={`${c.reason}${rules ? `; ${rules}` : ""}`}>
                      <Verdict value={c.decision} />
                      <span class="why">
                        {c.reason_code}
                        {c.layer === null ? "" : ` · ${c.layer}`}
                        {c.rules.length > 0
                          ? ` · may ${c.rules.map((r) => `${r.effect} (${r.id})`).join(", ")}`
                          : ""}
                      </span>
                    </td>
                  );
                })}
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <h2 id="whatif-title">What if</h2>
      <p class="muted">
        Edit the tenant's policy (JSON, as in the config file), then replay its last calls under it. Nothing
        is saved.
      </p>
      <form
        aria-labelledby="whatif-title"
        onSubmit={(e) => {
          e.preventDefault();
          void evaluate();
        }}
      >
        <label class="block">
          Draft policy of {tenant}
          <textarea
            name="draft"
            rows={14}
            value={draft}
            onInput={(e) => setDraft((e.target as HTMLTextAreaElement).value)}
          />
        </label>
        <label>
          Last calls
          <input
            name="last"
            type="number"
            min={1}
            max={5000}
            value={last}
            onInput={(e) => setLast(Number((e.target as HTMLInputElement).value))}
          />
        </label>
        <button type="submit">Replay</button>
      </form>
      {whatIf === null ? null : (
        <div aria-live="polite" data-testid="whatif-result">
          <p>
            {whatIf.changed.length} of {whatIf.replayed} replayed calls would be decided differently.
          </p>
          {whatIf.changed.length === 0 ? null : (
            <table class="records">
              <thead>
                <tr>
                  <th scope="col">Time</th>
                  <th scope="col">User</th>
                  <th scope="col">Tool</th>
                  <th scope="col">Now</th>
                  <th scope="col">With the draft</th>
                  <th scope="col">Record</th>
                </tr>
              </thead>
              <tbody>
                {whatIf.changed.map((c) => (
                  <tr key={`${c.call.log}#${c.call.seq}`}>
                    <td>{when(c.call.time)}</td>
                    <td>{c.call.user}</td>
                    <td>{c.call.tool}</td>
                    <td>
                      <Verdict value={c.now.decision} /> {c.now.reason_code}
                    </td>
                    <td>
                      <Verdict value={c.draft.decision} /> {c.draft.reason_code}: {c.draft.reason}
                    </td>
                    <td>
                      <a href={`#/audit/record/${encodeURIComponent(c.call.log)}/${c.call.seq}`}>
                        #{c.call.seq}
                      </a>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </div>
      )}
    </section>
  );
}
