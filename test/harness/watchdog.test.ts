/**
 * The test run's watchdog (test/support/watchdog.ts): a test file whose main thread is blocked for good ends the
 * run red, named with its test, within the watchdog's time, where Vitest alone would wait for it forever.
 */
import { execFile } from "node:child_process";
import { join } from "node:path";
import { expect, it } from "vitest";

const ROOT = join(import.meta.dirname, "../..");

it("kills a test file blocked in native code, naming it and its test, and the run fails", async () => {
  const started = Date.now();
  const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve) => {
    const child = execFile(
      process.execPath,
      [
        join(ROOT, "node_modules/vitest/vitest.mjs"),
        "run",
        "--config",
        "test/fixtures/watchdog/vitest.config.ts",
      ],
      { cwd: ROOT, env: { ...process.env, ONBEHALF_TEST_WATCHDOG_MS: "2000", CI: "1" }, timeout: 60_000 },
      (_e, stdout, stderr) => resolve({ code: child.exitCode, output: stdout + stderr }),
    );
  });
  expect(output).toMatch(
    /watchdog: \S*test\/fixtures\/watchdog\/blocked\.fixture\.ts has run for 2 s \(pid \d+\), in test: waits on a lock nobody releases/,
  );
  expect(output).toMatch(/watchdog: killing pid \d+/);
  expect(output).toMatch(/Worker exited unexpectedly/);
  expect(code).toBe(1);
  expect(Date.now() - started).toBeLessThan(30_000);
}, 60_000);
