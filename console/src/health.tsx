/**
 * Health: decisions per minute by outcome and decision latency p50/p99 (this instance, last hour), the most
 * denied tools and reasons, the audit log's size and last checkpoint, and whether the stores answer.
 */
import { useEffect, useState } from "preact/hooks";
import type { Counted, HealthAnswer } from "../../src/server/ui/wire.js";
import { api } from "./api.js";
import { Chart } from "./chart.js";
import { ErrorNote, when } from "./ui.js";

const DECISIONS = [
  { label: "allow", stroke: "#2e7d32" },
  { label: "deny", stroke: "#c62828" },
  { label: "ask", stroke: "#ef6c00" },
];
const LATENCY = [
  { label: "p50 ms", stroke: "#1565c0" },
  { label: "p99 ms", stroke: "#6a1b9a" },
];

export function Health() {
  const [h, setH] = useState<HealthAnswer | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    const load = () => api<HealthAnswer>("GET", "/ui/api/health").then(setH, setError);
    void load();
    const timer = setInterval(() => void load(), 10_000);
    return () => clearInterval(timer);
  }, []);
  if (h === null) return <ErrorNote error={error} />;
  const x = h.series.map((p) => Date.parse(p.minute) / 1000);
  return (
    <section aria-labelledby="health-title">
      <h1 id="health-title">Health</h1>
      <ErrorNote error={error} />
      <div class="cards">
        <div class="card">
          <h2>Audit log</h2>
          <p>
            {h.audit.log}: <strong>{h.audit.size}</strong> records ·{" "}
            {h.audit.healthy ? "writing" : `not writing: ${h.audit.problem}`}
          </p>
          <p>
            Last checkpoint:{" "}
            {h.audit.checkpoint === null
              ? "none yet"
              : `${h.audit.checkpoint.size} records, signed ${when(h.audit.checkpoint.time)}`}
          </p>
        </div>
        <div class="card">
          <h2>Stores</h2>
          <p>Audit store: {h.audit.healthy ? "ok" : "down"}</p>
          <p>State store: {h.state.healthy ? "ok" : `down: ${h.state.problem}`}</p>
        </div>
      </div>
      <Chart
        title="Decisions per minute"
        x={x}
        series={DECISIONS}
        values={[h.series.map((p) => p.allow), h.series.map((p) => p.deny), h.series.map((p) => p.ask)]}
      />
      <Chart
        title="Decision latency (ms)"
        x={x}
        series={LATENCY}
        values={[h.series.map((p) => p.p50_ms), h.series.map((p) => p.p99_ms)]}
      />
      <div class="cards">
        <Top title="Most denied tools" rows={h.top_denied_tools} />
        <Top title="Most frequent denial reasons" rows={h.top_denied_reasons} />
      </div>
    </section>
  );
}

function Top({ title, rows }: { title: string; rows: readonly Counted[] }) {
  return (
    <div class="card">
      <h2>{title}</h2>
      {rows.length === 0 ? (
        <p class="muted">No denials among recent records.</p>
      ) : (
        <table>
          <tbody>
            {rows.map((r) => (
              <tr key={r.name}>
                <th scope="row">{r.name}</th>
                <td>{r.count}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}
