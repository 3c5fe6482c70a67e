/**
 * The test run's watchdog (test/support/watchdog.ts): a test file whose main thread is blocked for good ends the
 * run red, named with its test, within the watchdog's time, and takes the processes it started with it, where
 * Vitest alone would wait for it forever.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, it } from "vitest";

const ROOT = join(import.meta.dirname, "../..");

it("kills a test file blocked in native code and what it started, naming the file and its test; the run fails", async () => {
  const pidFile = join(mkdtempSync(join(tmpdir(), "onbehalf-watchdog-")), "child.pid");
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
      {
        cwd: ROOT,
        // gdb's report is left out here: attaching takes seconds on a loaded machine, and it is only a report
        env: {
          ...process.env,
          ONBEHALF_TEST_WATCHDOG_MS: "2000",
          ONBEHALF_TEST_WATCHDOG_GDB: "0",
          WATCHDOG_CHILD_PID_FILE: pidFile,
          CI: "1",
        },
        timeout: 45_000,
      },
      (_e, stdout, stderr) => resolve({ code: child.exitCode, output: stdout + stderr }),
    );
  });
  expect(output).toMatch(
    /watchdog: \S*test\/fixtures\/watchdog\/blocked\.fixture\.ts has run for 2 s \(pid \d+\), in test: waits on a lock nobody releases/,
  );
  const sleeper = Number(readFileSync(pidFile, "utf8"));
  expect(output).toMatch(new RegExp(`^  ${sleeper}\\s+\\d+\\s.*\\ssleep 300$`, "m"));
  expect(output).toMatch(/watchdog: killing pid \d+ and the processes it started/);
  expect(output).toMatch(/Worker exited unexpectedly/);
  expect(code).toBe(1);
  expect(Date.now() - started).toBeLessThan(40_000);
  // the process it started is gone too (once reaped: killed with its parent, it is init's to reap)
  const gone = async () => {
    for (let i = 0; i < 50; i++) {
      try {
        process.kill(sleeper, 0);
      } catch (e) {
        return (e as NodeJS.ErrnoException).code;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    return "still running";
  };
  expect(await gone()).toBe("ESRCH");
}, 90_000);
