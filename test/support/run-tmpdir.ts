/**
 * Vitest's global setup: one temporary directory for the whole run. Every file a test writes through
 * `os.tmpdir()`, and every server, Python client or browser a test starts (they inherit TMPDIR), lands in it, and
 * the run removes it when it ends: repeated runs on one machine leave nothing behind (the soak's SQLite store alone
 * is ~300 MB a run; a machine that fills its disk fails every test that writes).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export default function setup(): () => void {
  const outer = process.env["TMPDIR"];
  const dir = mkdtempSync(join(tmpdir(), "onbehalf-test-run-"));
  process.env["TMPDIR"] = dir;
  return () => {
    if (outer === undefined) delete process.env["TMPDIR"];
    else process.env["TMPDIR"] = outer;
    try {
      rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    } catch (e) {
      // a process still writing there: the run's result stands, the folder is left
      console.warn(`the test run's temporary folder ${dir} was not removed: ${(e as Error).message}`);
    }
  };
}
