/**
 * Redaction by path. A path is dot-separated keys from the root of the value, where `*` matches any key and
 * `[*]` any array element, `[3]` one element: `ssn`, `cards[*].number`, `customer.*.phone`.
 *
 * Paths fail closed where the data's shape differs from the path's: a key met on an array applies to each
 * element (`rows.ssn` when rows is a list), `[*]` or `[3]` met on a single object applies to that object
 * (`cards[*].number` when cards is one card), and a string met where the path goes on is parsed when it holds
 * JSON (`body.ssn` when body is `"{\"ssn\": …}"`), redacted and serialized again.
 *
 * Redaction copies on write: the input is never mutated, untouched branches are shared.
 */

export type Segment =
  | { kind: "key"; key: string }
  | { kind: "any" }
  | { kind: "each" }
  | { kind: "index"; index: number };

/** A path compiled once at load. */
export type RedactPath = readonly Segment[];

export const REDACTED = "[REDACTED]";

const SEGMENT = /([^.[\]]+)|\[(\*|\d+)\]/g;

/**
 * Compile a path, or return an error message that says what is wrong with it.
 *
 * @example
 * const p = compilePath("cards[*].number"); // [{key:"cards"},{any},{key:"number"}]
 */
export function compilePath(path: string): RedactPath | { error: string } {
  const segments: Segment[] = [];
  let consumed = 0;
  for (const m of path.matchAll(SEGMENT)) {
    const between = path.slice(consumed, m.index);
    if (between !== "" && !(between === "." && segments.length > 0)) {
      return { error: `unexpected "${between}" in redaction path "${path}"` };
    }
    consumed = m.index + m[0].length;
    if (m[1] !== undefined) {
      segments.push(m[1] === "*" ? { kind: "any" } : { kind: "key", key: m[1] });
    } else if (m[2] === "*") {
      segments.push({ kind: "each" });
    } else {
      segments.push({ kind: "index", index: Number(m[2]) });
    }
  }
  if (segments.length === 0 || consumed !== path.length) {
    return { error: `redaction path "${path}" is not of the form a.b[*].c` };
  }
  return segments;
}

/**
 * Replace every value at any of `paths` with `"[REDACTED]"`. Returns the input itself when nothing matched.
 *
 * @example
 * redact({ ssn: "1", name: "A" }, [compilePath("ssn") as RedactPath]); // { ssn: "[REDACTED]", name: "A" }
 */
export function redact<T>(value: T, paths: readonly RedactPath[]): T {
  let out: unknown = value;
  for (const path of paths) out = redactAt(out, path, 0);
  return out as T;
}

function redactAt(value: unknown, path: RedactPath, depth: number): unknown {
  const segment = path[depth];
  if (segment === undefined) return REDACTED;
  if (typeof value === "string") return redactJsonText(value, path, depth);
  if (value === null || typeof value !== "object") return value;
  // An ORM entity, a class with getters, anything with toJSON: its fields are not own data properties, yet a JSON
  // encoder shows them to the model. Redact what the encoder would show.
  if (!isPlain(value)) {
    let json: unknown;
    try {
      json = JSON.parse(JSON.stringify(value));
    } catch {
      return REDACTED; // a cycle, a BigInt: what cannot be encoded cannot be checked, so it is withheld
    }
    const out = redactAt(json, path, depth);
    return out === json ? value : out;
  }
  if (Array.isArray(value)) {
    // A key met on a list: the path goes on in each element (the same segment, not the next).
    const step = segment.kind === "key" ? depth : depth + 1;
    let copy: unknown[] | undefined;
    const indexes = segment.kind === "index" ? [segment.index] : value.keys();
    for (const i of indexes) {
      if (i >= value.length) continue;
      const next = redactAt(value[i], path, step);
      if (next !== value[i]) {
        copy ??= value.slice();
        copy[i] = next;
      }
    }
    return copy ?? value;
  }
  // An element step met on a single object: that object is the element.
  if (segment.kind === "index" || segment.kind === "each") return redactAt(value, path, depth + 1);
  const record = value as Record<string, unknown>;
  let copy: Record<string, unknown> | undefined;
  const keys = segment.kind === "key" ? [segment.key] : Object.keys(record);
  for (const key of keys) {
    if (!Object.hasOwn(record, key)) continue;
    const next = redactAt(record[key], path, depth + 1);
    if (next !== record[key]) {
      copy ??= { ...record };
      // defineProperty, not assignment: a JSON key "__proto__" must stay a plain property.
      Object.defineProperty(copy, key, { value: next, enumerable: true, writable: true, configurable: true });
    }
  }
  return copy ?? value;
}

/** A JSON object or array held in a string, redacted and serialized again; other strings as they are. */
function redactJsonText(text: string, path: RedactPath, depth: number): string {
  const start = text.trimStart()[0];
  if (start !== "{" && start !== "[") return text;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return text;
  }
  const out = redactAt(parsed, path, depth);
  return out === parsed ? text : JSON.stringify(out);
}

function isPlain(value: object): boolean {
  if (typeof (value as { toJSON?: unknown }).toJSON === "function") return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null || proto === Array.prototype;
}
