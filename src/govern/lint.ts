/**
 * The narrow-tool lint. Per-user policy decides on the tool and its arguments; a tool whose input is a
 * free-form command or program ("run this shell line", "evaluate this code", "execute this SQL") can do
 * anything its process can, whatever the policy says about it. Such a tool gets a warning at registration.
 */

const SUSPECT_NAME =
  /(^|[_.:/-])(bash|sh|shell|exec|execute|eval|run_?code|python|node|script|sql|query_?db|terminal|cmd|powershell)($|[_.:/-])/i;
const SUSPECT_FIELD =
  /^(command|cmd|commands|code|script|source|program|shell|sql|query|statement|expression|expr|eval)$/i;

/**
 * Return a warning when the tool looks like a free-form command or code runner, else undefined.
 *
 * @example
 * lintTool("bash", { type: "object", properties: { command: { type: "string" } } });
 * // "tool "bash" takes a free-form command string (command): …"
 */
export function lintTool(
  name: string,
  inputSchema: Readonly<Record<string, unknown>> | undefined,
): string | undefined {
  const freeForm = freeFormFields(inputSchema);
  if (freeForm.length === 0 && !SUSPECT_NAME.test(name)) return undefined;
  const what =
    freeForm.length > 0
      ? `a free-form command or code string (${freeForm.join(", ")})`
      : "free-form commands";
  return (
    `tool "${name}" appears to take ${what}: per-user policy can allow or deny it, but cannot bound what it ` +
    "does once allowed. Prefer narrow tools (one action each, typed arguments), or guard it with rules on args."
  );
}

function freeFormFields(schema: Readonly<Record<string, unknown>> | undefined): string[] {
  const properties = schema?.["properties"];
  if (properties === null || typeof properties !== "object") return [];
  const out: string[] = [];
  for (const [field, spec] of Object.entries(properties as Record<string, unknown>)) {
    if (!SUSPECT_FIELD.test(field) || spec === null || typeof spec !== "object") continue;
    const s = spec as Record<string, unknown>;
    const bounded = "enum" in s || "const" in s || "pattern" in s || "format" in s;
    if (s["type"] === "string" && !bounded) out.push(field);
  }
  return out;
}
