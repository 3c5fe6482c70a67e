/**
 * Canonical JSON (RFC 8785, JCS) for the values onbehalf hashes: object keys sorted by UTF-16 code units,
 * no whitespace, strings and numbers as ECMAScript's JSON.stringify writes them. Two parties that hold the
 * same record produce the same bytes, so anyone can recompute a leaf hash without onbehalf's code.
 *
 * Values that JSON cannot carry are normalized the way JSON.stringify does (undefined properties and
 * functions dropped, undefined in arrays as null) except non-finite numbers, which are written as null too.
 */

/** Printable ASCII but `"` and `\`: the strings JSON.stringify writes between quotes as they are. */
const PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

/**
 * A string as JSON.stringify writes it (RFC 8785's strings), about twice as fast for the plain ASCII of most
 * record fields (names, times, ids): sealing writes some twenty per record.
 *
 * @example
 * jsonString("get_customer"); // '"get_customer"'
 */
export function jsonString(value: string): string {
  return PLAIN.test(value) ? `"${value}"` : JSON.stringify(value);
}

/**
 * Serialize `value` canonically.
 *
 * @example
 * canonicalJson({ b: 1, a: [true, "x"] }); // '{"a":[true,"x"],"b":1}'
 */
export function canonicalJson(value: unknown): string {
  switch (typeof value) {
    case "string":
      return jsonString(value);
    case "number":
      return Number.isFinite(value) ? JSON.stringify(value) : "null";
    case "boolean":
      return value ? "true" : "false";
    case "bigint":
      return JSON.stringify(value.toString());
    case "object":
      return value === null ? "null" : canonicalObject(value);
    default:
      return "null";
  }
}

function canonicalObject(value: object): string {
  if (Array.isArray(value)) {
    let out = "[";
    for (let i = 0; i < value.length; i++) out += (i === 0 ? "" : ",") + canonicalJson(value[i]);
    return `${out}]`;
  }
  const json = (value as { toJSON?: () => unknown }).toJSON;
  if (typeof json === "function") return canonicalJson(json.call(value));
  const record = value as Record<string, unknown>;
  const keys = Object.keys(record).sort();
  let out = "{";
  let first = true;
  for (const key of keys) {
    const v = record[key];
    if (v === undefined || typeof v === "function" || typeof v === "symbol") continue;
    out += `${first ? "" : ","}${jsonString(key)}:${canonicalJson(v)}`;
    first = false;
  }
  return `${out}}`;
}
