/**
 * The tests run on more than one Node (the machine's, then the current LTS: .ci/node-lts), so every Node process
 * a test starts must be the Node running the tests, `process.execPath`, never whatever `node` the PATH finds
 * first: that one could be another version, with a better-sqlite3 built for another ABI.
 */
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, normalize, relative } from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = normalize(join(import.meta.dirname, ".."));

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sources(path);
    return /\.(ts|js|mjs)$/.test(name) ? [path] : [];
  });
}

/** A child process started by name: spawn("node", …), execFile("npx", …), exec("node …"), fork is fine. */
const BY_NAME = /\b(?:spawn|spawnSync|execFile|execFileSync|exec|execSync)\(\s*["'`](?:node|npx|npm|tsx)\b/;

describe("the Node the tests start", () => {
  it("is named by process.execPath wherever a test or the source starts a Node process", () => {
    const offenders = [...sources(join(ROOT, "src")), ...sources(join(ROOT, "test"))]
      .filter((file) => file !== import.meta.filename && BY_NAME.test(readFileSync(file, "utf8")))
      .map((file) => relative(ROOT, file));
    expect(offenders).toEqual([]);
    expect(BY_NAME.test(`spawn("node", ["x.js"])`)).toBe(true); // the check is real
  });

  it("is this very Node, its version and ABI", () => {
    const child = execFileSync(process.execPath, ["-p", "process.version + ' ' + process.versions.modules"], {
      encoding: "utf8",
    });
    expect(child.trim()).toBe(`${process.version} ${process.versions.modules}`);
  });
});
