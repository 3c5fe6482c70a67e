/**
 * The shared test vectors (Wycheproof, RFC 6962 Merkle proofs) live outside the repository, in
 * `../shared/testdata` next to the checkout (or in a parent's `shared/`, or at /work/shared/testdata for a
 * clone made elsewhere); they are read in place, never copied. `ONBEHALF_TESTDATA` overrides the location.
 * A missing folder fails the tests loudly rather than skipping them.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";

/** Where this workplace keeps `shared/`, for a clone made elsewhere (a CI checkout in a temporary folder). */
const WORKPLACE_SHARED = "/work/shared";

/**
 * `shared/<relative>` beside the checkout or beside one of its parents, else in the workplace's `/work/shared`;
 * undefined when none has it.
 */
export function findShared(relative: string): string | undefined {
  for (let dir = resolve(import.meta.dirname, "../.."); ; dir = dirname(dir)) {
    const candidate = join(dir, "..", "shared", relative);
    if (existsSync(candidate)) return candidate;
    if (dirname(dir) === dir) break;
  }
  const workplace = join(WORKPLACE_SHARED, relative);
  return existsSync(workplace) ? workplace : undefined;
}

function locate(): string {
  const fromEnv = process.env["ONBEHALF_TESTDATA"];
  if (fromEnv !== undefined && fromEnv !== "") return resolve(fromEnv);
  const found = findShared("testdata");
  if (found !== undefined) return found;
  throw new Error(
    "shared test vectors not found: expected ../shared/testdata next to the checkout, or set ONBEHALF_TESTDATA",
  );
}

export const TESTDATA = locate();

/** Every *.json file under a testdata folder, recursively, with its path relative to that folder. */
export function jsonFiles(folder: string): { name: string; text: string }[] {
  const root = join(TESTDATA, folder);
  const out: { name: string; text: string }[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir).sort()) {
      const path = join(dir, entry);
      if (statSync(path).isDirectory()) walk(path);
      else if (entry.endsWith(".json"))
        out.push({ name: path.slice(root.length + 1), text: readFileSync(path, "utf8") });
    }
  };
  walk(root);
  return out;
}
