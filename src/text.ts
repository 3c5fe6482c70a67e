/**
 * What identifiers may contain. Tool names, agent names, tenant and user ids, trace ids and call ids end up in
 * audit columns, HTTP headers and terminals: control characters (NUL included) and unpaired UTF-16 surrogates
 * cannot be stored by PostgreSQL's text type, break headers and terminals, and are refused at every edge.
 *
 * Like errors.ts, this module imports nothing from the project: every concern may import it.
 */

/** A control character (C0, DEL, C1) or a surrogate without its pair (in `u` mode a pair is one code point). */
const UNSAFE = /[\p{Cc}\p{Cs}]/u;
const UNSAFE_ALL = new RegExp(UNSAFE.source, "gu");

/**
 * True when `text` holds a control character or an unpaired surrogate.
 *
 * @example
 * hasUnsafeText("x\u0000y"); // true
 * hasUnsafeText("get_customer"); // false
 */
export function hasUnsafeText(text: string): boolean {
  return UNSAFE.test(text);
}

/** The message for a field that holds unsafe text, naming the field and the fix. */
export function unsafeTextMessage(field: string): string {
  return `${field} must not contain control characters (NUL, newline, escape, ...) or unpaired surrogates`;
}

/**
 * `text` with every control character and unpaired surrogate written as a visible escape (`\u0000`), for
 * terminals and logs.
 *
 * @example
 * escapeUnsafeText("a\u001b[31mb"); // "a\\u001b[31mb"
 */
export function escapeUnsafeText(text: string): string {
  return text.replace(UNSAFE_ALL, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}
