/**
 * Scope narrowing, the one rule behind every hop: what may be used is what is held ∩ what is asked for. A
 * scope never appears that the holder did not already have.
 */

/**
 * The scopes of `want` that `have` holds, in `want`'s order, without duplicates; `want` undefined keeps
 * `have` whole.
 *
 * @example
 * narrowScopes(new Set(["a", "b"]), ["b", "c"]); // ["b"]
 */
export function narrowScopes(have: ReadonlySet<string>, want: Iterable<string> | undefined): string[] {
  if (want === undefined) return [...have];
  const out = new Set<string>();
  for (const s of want) if (have.has(s)) out.add(s);
  return [...out];
}
