/**
 * Vitest setup file: a watchdog for each test file's process. Vitest bounds every test and hook with its timeout,
 * but a process whose main thread is blocked in native code (no timer can fire there) never ends its file, and
 * the run waits for it with no deadline. A thread of the process's own watches the clock instead: a file still
 * running after WATCHDOG_MS is reported on stderr (the file, the test it was in, the processes running, the
 * process's native stacks from gdb where it is installed) and its process is killed, so that the run ends red
 * and says where, instead of waiting until CI's limit.
 */
import { Worker } from "node:worker_threads";
import { beforeAll, beforeEach, expect } from "vitest";

/** Far beyond the slowest file (the docs' commands, ~70 s on a slow machine; no test may take over 4 minutes). */
const WATCHDOG_MS = Number(process.env["ONBEHALF_TEST_WATCHDOG_MS"] ?? 10 * 60_000);

/** The name of the test running now, for the watchdog thread to read: its length, then its UTF-8 bytes. */
const current = new SharedArrayBuffer(4 + 1024);
const currentLength = new Int32Array(current, 0, 1);
const currentBytes = new Uint8Array(current, 4);

const WATCHDOG = `
const { workerData } = require("node:worker_threads");
const { execFileSync } = require("node:child_process");
const { writeSync } = require("node:fs");
const { pid, file, ms, current } = workerData;
setTimeout(() => {
  const length = Atomics.load(new Int32Array(current, 0, 1), 0);
  const test = Buffer.from(new Uint8Array(current, 4, length)).toString("utf8") || "(none: in a hook)";
  const run = (cmd, args) => {
    try {
      return execFileSync(cmd, args, { encoding: "utf8", timeout: 60_000, stdio: ["ignore", "pipe", "pipe"] });
    } catch (e) {
      return cmd + ": " + e.message;
    }
  };
  writeSync(2, [
    "watchdog: " + file + " has run for " + ms / 1000 + " s (pid " + pid + "), in test: " + test,
    run("ps", ["-eo", "pid,ppid,etime,stat,pcpu,args", "--forest"]),
    run("gdb", ["-p", String(pid), "-batch", "-ex", "thread apply all bt 40"]),
    "watchdog: killing pid " + pid + ": the run goes on without this file",
    "",
  ].join("\\n"));
  process.kill(pid, "SIGKILL");
}, ms);
`;

beforeAll(() => {
  const file = expect.getState().testPath ?? "a test file";
  new Worker(WATCHDOG, {
    eval: true,
    workerData: { pid: process.pid, file, ms: WATCHDOG_MS, current },
  }).unref();
});

beforeEach(() => {
  const name = Buffer.from(expect.getState().currentTestName ?? "").subarray(0, currentBytes.length);
  currentBytes.set(name);
  Atomics.store(currentLength, 0, name.length);
});
