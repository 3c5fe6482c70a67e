/**
 * Prometheus text exposition (format 0.0.4) for a handful of counters and gauges. Counters are labelled by
 * small, fixed sets (decision, reason code, route, status); nothing user-controlled becomes a label.
 */

type Labels = Readonly<Record<string, string>>;

export class Metrics {
  private readonly counters = new Map<string, { help: string; values: Map<string, number> }>();
  private readonly gauges = new Map<string, { help: string; read: () => number }>();

  counter(name: string, help: string): (labels: Labels, by?: number) => void {
    const entry = { help, values: new Map<string, number>() };
    this.counters.set(name, entry);
    // Label sets are few and repeat on every request: render each once.
    const rendered = new Map<string, string>();
    return (labels, by = 1) => {
      const raw = Object.values(labels).join("\u0000");
      let key = rendered.get(raw);
      if (key === undefined) {
        key = labelString(labels);
        rendered.set(raw, key);
      }
      entry.values.set(key, (entry.values.get(key) ?? 0) + by);
    };
  }

  gauge(name: string, help: string, read: () => number): void {
    this.gauges.set(name, { help, read });
  }

  /** The exposition text. */
  render(): string {
    const lines: string[] = [];
    for (const [name, { help, values }] of this.counters) {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`);
      for (const [labels, v] of values) lines.push(`${name}${labels} ${v}`);
    }
    for (const [name, { help, read }] of this.gauges) {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, `${name} ${read()}`);
    }
    return `${lines.join("\n")}\n`;
  }
}

function labelString(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/["\\\n]/g, "_")}"`);
  return parts.length === 0 ? "" : `{${parts.join(",")}}`;
}
