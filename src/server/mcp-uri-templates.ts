/**
 * Resource templates (RFC 6570) as the gateway reads them: which URIs one expands to, for routing a read, and
 * which `resources:` entry governs it, for listing it.
 */
import { hasUnsafeText } from "../text.js";

/** Longest template considered. */
const MAX_TEMPLATE = 2000;

/**
 * What URIs an RFC 6570 template expands to, as a regular expression: a simple `{var}` stays within a path
 * segment; `{+var}` and `{#var}` may span segments; `{/var}`, `{.var}`, `{;var}`, `{?var}` and `{&var}` add
 * their own separators. Undefined for a template that is not one.
 *
 * @example
 * templatePattern("crm://orders/{id}")?.test("crm://orders/9"); // true
 */
export function templatePattern(template: string): RegExp | undefined {
  if (template.length > MAX_TEMPLATE || hasUnsafeText(template)) return undefined;
  const parts = template.split(/(\{[^{}]*\})/);
  if (parts.some((p) => !p.startsWith("{") && /[{}]/.test(p))) return undefined;
  const source = parts
    .map((p) => {
      if (!p.startsWith("{")) return p.replace(/[\\^$.*|?+()[\]{}]/g, "\\$&");
      switch (p[1]) {
        case "+":
        case "#":
          return ".*";
        case "/":
          return "(?:/[^/?#]*)*";
        case ".":
          return "(?:\\.[^/?#.]*)*";
        case ";":
          return "(?:;[^/?#]*)*";
        case "?":
        case "&":
          return "(?:[?&][^#]*)?";
        default:
          return "[^/?#&]*";
      }
    })
    .join("");
  return new RegExp(`^${source}$`, "s");
}

/**
 * A template as a URI pattern of config/resources.ts, to find the `resources:` entry that governs it: a simple
 * expression is one segment (`*`), any other may span several (`**`).
 *
 * @example
 * templateSample("crm://customers/{id}"); // "crm://customers/*"
 */
export function templateSample(template: string): string {
  return template.replace(/\{([^{}]*)\}/g, (_m, expr: string) => (/^[A-Za-z0-9_%]/.test(expr) ? "*" : "**"));
}
