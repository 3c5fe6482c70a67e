/**
 * Vitest setup file: a watchdog for each test file's process. Vitest bounds every test and hook with its timeout,
 * but a process whose main thread is blocked in native code (no timer can fire there) never ends its file, and
 * the run waits for it with no deadline. A thread of the process's own watches the clock instead: a file still
 * running after ONBEHALF_TEST_WATCHDOG_MS (default 10 minutes) is reported on stderr (the file, the test it was
 * in, the processes it started, its native stacks from gdb where gdb is installed), the processes it started
 * are killed, then it is: the run fails there and says where, instead of waiting until CI's limit.
 */
import { Worker } from "node:worker_threads";
import { afterAll, afterEach, beforeEach, expect } from "vitest";

/** Far beyond the slowest file (the docs' commands, ~70 s on a slow machine; no test may take over 4 minutes). */
const DEFAULT_MS = 10 * 60_000;
const asked = Number(process.env["ONBEHALF_TEST_WATCHDOG_MS"]);
const WATCHDOG_MS = Number.isFinite(asked) && asked > 0 ? asked : DEFAULT_MS;

/** The name of the test running now, for the watchdog thread to read: its length, then its UTF-8 bytes. */
const current = new SharedArrayBuffer(4 + 1024);
const currentLength = new Int32Array(current, 0, 1);
const currentBytes = new Uint8Array(current, 4);

const WATCHDOG = `
const { workerData } = require("node:worker_threads");
const { execFileSync } = require("node:child_process");
const { writeSync } = require("node:fs");
const { pid, file, ms, current, gdb } = workerData;
const run = (cmd, args) => {
  try {
    return execFileSync(cmd, args, { encoding: "utf8", timeout: 60_000, stdio: ["ignore", "pipe", "pipe"] });
  } catch (e) {
    return cmd + ": " + e.message;
  }
};
/** The processes this one started, and theirs, from ps: [pid, line]. */
const descendants = () => {
  const rows = run("ps", ["-eo", "pid=,ppid=,etime=,stat=,args="]).split("\\n").map((line) => {
    const [p, pp] = line.trim().split(/\\s+/, 2).map(Number);
    return { pid: p, ppid: pp, line: line.trim().slice(0, 300) };
  });
  const mine = new Set([pid]);
  const out = [];
  for (let grew = true; grew; ) {
    grew = false;
    for (const r of rows) {
      if (!mine.has(r.pid) && mine.has(r.ppid) && !r.line.endsWith(" ps -eo pid=,ppid=,etime=,stat=,args=")) {
        mine.add(r.pid);
        out.push(r);
        grew = true;
      }
    }
  }
  return out;
};
setTimeout(() => {
  const length = Atomics.load(new Int32Array(current, 0, 1), 0);
  const test = Buffer.from(new Uint8Array(current, 4, length)).toString("utf8") || "(none: in a hook, or loading)";
  const children = descendants();
  writeSync(2, [
    "watchdog: " + file + " has run for " + ms / 1000 + " s (pid " + pid + "), in test: " + test,
    "watchdog: the processes it started (pid ppid elapsed state command):",
    ...children.map((c) => "  " + c.line),
    gdb ? run("gdb", ["-p", String(pid), "-batch", "-ex", "thread apply all bt 40"]) : "",
    "watchdog: killing pid " + pid + " and the processes it started: the run goes on without this file",
    "",
  ].join("\\n"));
  for (const c of children) {
    try {
      process.kill(c.pid, "SIGKILL");
    } catch {}
  }
  process.kill(pid, "SIGKILL");
}, ms);
`;

const watchdog = new Worker(WATCHDOG, {
  eval: true,
  workerData: {
    pid: process.pid,
    file: expect.getState().testPath ?? "a test file",
    ms: WATCHDOG_MS,
    current,
    gdb: process.env["ONBEHALF_TEST_WATCHDOG_GDB"] !== "0",
  },
});
watchdog.unref();
// One process may run several files (without isolation): each file's watchdog ends with it.
afterAll(() => watchdog.terminate());

const noteTest = (name: string) => {
  const bytes = Buffer.from(name).subarray(0, currentBytes.length);
  currentBytes.set(bytes);
  Atomics.store(currentLength, 0, bytes.length);
};
beforeEach(() => noteTest(expect.getState().currentTestName ?? ""));
afterEach(() => noteTest(""));
