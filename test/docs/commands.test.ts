/**
 * The docs' shell commands run as written. Every command of every ```sh / ```console block of README.md and
 * docs/*.md is executed in order, in one bash session per file (so `export URL=…` carries over), in a sandbox
 * that looks like the repository root after the quick start: its own copy of examples/ and clients/, the
 * built CLI behind `npx onbehalf` (offline), and the control plane `npm start` runs. A command fails the test
 * when it exits non-zero, when it prints an API error, or when its output does not have the shape the doc
 * shows. The only commands not run as written are those in NOT_RUN and RUN_IN_PART, each with why.
 */
import { execFileSync, spawnSync } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { commandsIn, type DocCommand } from "./extract.js";

const ROOT = join(import.meta.dirname, "../..");

/**
 * The PATH the commands run with: this very Node first, so `npm start`, `npx onbehalf` and the build run on the
 * Node the tests run on (.ci/node-lts runs them on another one), not whichever `node` the PATH finds.
 */
const NODE_FIRST = `${dirname(process.execPath)}:${process.env.PATH}`;

/** Commands the test does not execute, and why. A doc that drops one of them fails the test (the list is stale). */
const NOT_RUN: Record<string, string> = {
  "npm test": "runs the whole suite, this test included",
  "pip install ./clients/python":
    "builds in an isolated environment, which downloads setuptools from PyPI; the test runs offline",
  'pip install "./clients/python[autogen]"': "installs AutoGen from PyPI; the test runs offline",
};

/**
 * Commands run in part, and why: the part left out is what CI does before the tests. The README's quick start
 * stays the one line a newcomer types.
 */
const RUN_IN_PART: Record<string, { readonly run: string; readonly why: string }> = {
  "npm install && npm start": {
    run: "npm start",
    why: "the install is CI's `npm ci` before the tests, from the registry; the test runs offline",
  },
};

/** Files with shell commands that are not run, and why. */
const FILES_NOT_RUN: Record<string, string> = {
  "docs/autogen.md": "starts from `pip install` of AutoGen and an OpenAI model client, from PyPI",
  "docs/policy.md": "its examples are `onbehalf policy explain` transcripts, checked by test/policy tests",
};

/** Commands that run until stopped: started in the background, ready when their output matches. */
const SERVICES: Record<string, RegExp> = { "npm start": /^endpoints:/m };

/**
 * The one substitution: the docs' port 8787 (the example config's) becomes a free port, in the sandbox's
 * config and in the commands, so that test files running in parallel never collide.
 */
const substitute = (text: string, port: number) => text.replaceAll("127.0.0.1:8787", `127.0.0.1:${port}`);

/** The files whose commands run: README.md and docs/*.md with a shell block. */
function docFiles(): string[] {
  const docs = readdirSync(join(ROOT, "docs"))
    .filter((f) => f.endsWith(".md"))
    .map((f) => `docs/${f}`);
  return ["README.md", ...docs].filter((f) => commandsIn(f, readFileSync(join(ROOT, f), "utf8")).length > 0);
}

function newestUnder(dir: string): number {
  return Math.max(
    ...readdirSync(dir).map((name) => {
      const path = join(dir, name);
      const st = statSync(path);
      return st.isDirectory() ? newestUnder(path) : st.mtimeMs;
    }),
  );
}

async function freePort(): Promise<number> {
  const server = createServer().listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/**
 * The files of `dirs` a fresh checkout has: those git tracks; in a copy without .git (.ci/node-lts tests a copy
 * of the checkout's files, nothing git ignores), every file there is.
 */
function checkoutFiles(dirs: string[]): string[] {
  if (existsSync(join(ROOT, ".git"))) {
    const tracked = execFileSync("git", ["ls-files", "-z", ...dirs], { cwd: ROOT, encoding: "utf8" });
    return tracked.split("\0").filter((f) => f !== "");
  }
  return dirs
    .flatMap((d) => readdirSync(join(ROOT, d), { recursive: true, withFileTypes: true }))
    .filter((e) => e.isFile())
    .map((e) => relative(ROOT, join(e.parentPath, e.name)));
}

/** A directory that looks like the repository root to a reader's commands, with a free port in its config. */
function sandbox(port: number): string {
  const dir = mkdtempSync(join(tmpdir(), "onbehalf-doc-commands-"));
  // examples/ and clients/ as a fresh checkout has them: the files git tracks, nothing a run left behind
  for (const file of checkoutFiles(["examples", "clients"])) {
    mkdirSync(dirname(join(dir, file)), { recursive: true });
    copyFileSync(join(ROOT, file), join(dir, file));
  }
  const config = join(dir, "examples/onbehalf.yaml");
  writeFileSync(
    config,
    substitute(readFileSync(config, "utf8"), port).replace("port: 8787", `port: ${port}`),
  );
  // `npm start` is the repository's script; `npx onbehalf` finds the CLI in node_modules/.bin, without a registry.
  const scripts = (
    JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { scripts: { start: string } }
  ).scripts;
  writeFileSync(
    join(dir, "package.json"),
    JSON.stringify({ name: "onbehalf-docs-sandbox", private: true, scripts: { start: scripts.start } }),
  );
  execFileSync("ln", ["-s", join(ROOT, "dist"), join(dir, "dist")]);
  mkdirSync(join(dir, "node_modules/.bin"), { recursive: true });
  execFileSync("ln", ["-s", ROOT, join(dir, "node_modules/onbehalf")]);
  writeFileSync(
    join(dir, "node_modules/.bin/onbehalf"),
    `#!/bin/sh\nexec "${process.execPath}" "${join(ROOT, "dist/cli/main.js")}" "$@"\n`,
    { mode: 0o755 },
  );
  return dir;
}

const PRELUDE = `set -e -o pipefail
# An HTTP error is a failed command, whatever its body says (the body is still printed, as curl -s shows it).
curl() { command curl --fail-with-body "$@"; }
__service() { # index, ready pattern (extended regex), command
  setsid bash -c "$3" > "$__out/service.$1" 2>&1 < /dev/null &
  echo $! >> "$__out/services"
  for _ in $(seq 1 600); do
    grep -Eq -- "$2" "$__out/service.$1" && return 0
    kill -0 $! 2> /dev/null || { echo "exited before it was ready" >&2; return 1; }
    sleep 0.1
  done
  echo "not ready after 60 s" >&2; return 1
}
__stop() { # Ctrl-C to each service's process group, then wait until every process of it has ended
  for p in $(cat "$__out/services" 2> /dev/null); do
    kill -INT -- -"$p" 2> /dev/null || true
    for _ in $(seq 1 200); do kill -0 -- -"$p" 2> /dev/null || continue 2; sleep 0.1; done
    echo "$p" >> "$__out/still-running"; kill -KILL -- -"$p" 2> /dev/null || true
  done
}
trap __stop EXIT
`;

interface Ran {
  readonly command: DocCommand;
  readonly out: string;
  readonly err: string;
}

/** Run `commands` in one bash session in `dir`; the commands that ran, the exit code, what was not stopped. */
function session(dir: string, port: number, commands: DocCommand[]) {
  const out = mkdtempSync(join(tmpdir(), "onbehalf-doc-session-"));
  sandboxes.push(out);
  const run = commands
    .filter((c) => NOT_RUN[bare(c.text)] === undefined)
    .map((c) => ({ ...c, text: RUN_IN_PART[c.text]?.run ?? c.text }));
  const startsServer = run.some((c) => SERVICES[c.text] !== undefined);
  const lines = [PRELUDE, `__out=${JSON.stringify(out)}`];
  // Every doc but the README's quick start assumes it was done: the control plane `npm start` runs is up.
  if (!startsServer) lines.push(`__service server '${SERVICES["npm start"]!.source}' 'npm start'`);
  run.forEach((c, i) => {
    lines.push(`echo ${i} > "$__out/at"`);
    const ready = SERVICES[c.text];
    if (ready !== undefined) lines.push(`__service ${i} '${ready.source}' ${JSON.stringify(c.text)}`);
    // `|| exit`: set -e does not stop at a failing `a && b` list; the command's own status always does.
    else
      lines.push(
        `{ ${substitute(c.text, port)}\n} > "$__out/${i}.out" 2> "$__out/${i}.err" < /dev/null || exit $?`,
      );
  });
  lines.push(`echo ${run.length} > "$__out/at"`);
  const venv = join(dir, ".venv");
  if (run.some((c) => /^pip\b/.test(c.text))) execFileSync("python3", ["-m", "venv", venv]);
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !/^(npm_|URL$|TOKEN$|ADMIN$|ONBEHALF_)/i.test(k)) env[k] = v;
  }
  Object.assign(env, {
    PATH: `${join(venv, "bin")}:${NODE_FIRST}`,
    npm_config_offline: "true",
    npm_config_update_notifier: "false",
    PIP_NO_INDEX: "1",
    PIP_DISABLE_PIP_VERSION_CHECK: "1",
  });
  const result = spawnSync("bash", ["-c", lines.join("\n")], { cwd: dir, env, encoding: "utf8" });
  const read = (name: string) => {
    try {
      return readFileSync(join(out, name), "utf8");
    } catch {
      return "";
    }
  };
  const at = Number(read("at").trim() || 0);
  const ran: Ran[] = run.slice(0, at + 1).map((command, i) => ({
    command,
    out: read(`${i}.out`) || read(`service.${i}`),
    err: read(`${i}.err`),
  }));
  return {
    ran,
    failed: result.status === 0 ? null : (run[at] ?? null),
    status: result.status,
    stderr: result.stderr,
    stillRunning: read("still-running"),
    server: read("service.server"),
  };
}

/** A command without its trailing comment. */
function bare(text: string): string {
  return text.replace(/\s+#[^'"\n]*$/, "");
}

const where = (c: DocCommand) => `${c.file}:${c.line}: ${c.text}`;

/** What is wrong with `ran`'s output, against what the doc shows for it; null when nothing is. */
function wrongOutput({ command, out }: Ran): string | null {
  if (/"error"\s*:\s*\{\s*"code"/.test(out)) return `answered an error: ${out.slice(0, 500)}`;
  const [first] = command.expected;
  if (first === undefined) return null;
  if (out.trim() === "") return "printed nothing, the doc shows an answer";
  // a shorter answer is one the doc's example does not show (`no matching records` in a fresh sandbox)
  if (out.trim().split("\n").length < command.expected.length) return null;
  if (/^[[{]/.test(first)) {
    // a JSON answer: every key the doc shows is in it
    const keys = [...first.matchAll(/"(\w+)"\s*:/g)].map((m) => m[1]!);
    const missing = keys.filter((k) => !out.includes(`"${k}":`));
    return missing.length === 0 ? null : `its answer lacks ${missing.join(", ")}: ${out.slice(0, 500)}`;
  }
  // a printed table or line: the same columns; a header (no digits) word for word
  const words = (l: string) => l.trim().split(/\s+/);
  const actual = words(out.split("\n")[0]!);
  if (!/\d/.test(first))
    return actual.join(" ") === words(first).join(" ") ? null : `its first line is ${actual}`;
  return actual.length === words(first).length ? null : `its first line is ${actual.join(" ")}`;
}

const sandboxes: string[] = [];
afterAll(() => {
  for (const dir of sandboxes) rmSync(dir, { recursive: true, force: true });
});

beforeAll(() => {
  // The commands run the built CLI (`npm start` runs dist/): build it when src/ changed since.
  const main = join(ROOT, "dist/cli/main.js");
  let built = 0;
  try {
    built = statSync(main).mtimeMs;
  } catch {}
  if (built < newestUnder(join(ROOT, "src")))
    execFileSync("bash", ["-c", "npm run build --silent"], {
      cwd: ROOT,
      env: { ...process.env, PATH: NODE_FIRST },
    });
}, 180_000);

describe("the docs' shell commands", () => {
  it("reads commands as a reader copies them: continuations, quoted lines, answers, console prompts", () => {
    const md = [
      "```sh",
      "export A=1   # a comment",
      "curl -s $URL \\",
      '  -d \'{"a": [',
      "  1]}'",
      '# {"ok": true}',
      "```",
      "```text",
      "npx onbehalf serve [--port N]",
      "```",
      "  ```console",
      "  $ npx onbehalf audit key",
      "  onbehalf@host-1+…",
      "  ```",
    ].join("\n");
    expect(commandsIn("x.md", md)).toEqual([
      { file: "x.md", line: 2, text: "export A=1   # a comment", expected: [] },
      { file: "x.md", line: 3, text: "curl -s $URL \\\n  -d '{\"a\": [\n  1]}'", expected: ['{"ok": true}'] },
      { file: "x.md", line: 12, text: "npx onbehalf audit key", expected: ["onbehalf@host-1+…"] },
    ]);
  });

  it("runs or names every command: NOT_RUN, RUN_IN_PART and FILES_NOT_RUN list only what the docs still show", () => {
    const files = docFiles();
    const shown = new Set(
      files.flatMap((f) => commandsIn(f, readFileSync(join(ROOT, f), "utf8")).map((c) => bare(c.text))),
    );
    expect([...Object.keys(NOT_RUN), ...Object.keys(RUN_IN_PART)].filter((c) => !shown.has(c))).toEqual([]);
    expect(Object.keys(FILES_NOT_RUN).filter((f) => !files.includes(f))).toEqual([]);
    expect(files).toEqual(
      expect.arrayContaining([
        "README.md",
        "docs/server.md",
        "docs/cli.md",
        "docs/audit.md",
        "docs/python.md",
      ]),
    );
  });

  const files = docFiles().filter((f) => FILES_NOT_RUN[f] === undefined);
  it.each(files)(
    "%s: every command runs as written, and answers as the doc shows",
    async (file) => {
      const port = await freePort();
      const dir = sandbox(port);
      sandboxes.push(dir);
      const commands = commandsIn(file, readFileSync(join(ROOT, file), "utf8"));
      const { ran, failed, status, stderr, stillRunning, server } = session(dir, port, commands);
      if (failed !== null || status !== 0) {
        const last = ran.at(-1);
        throw new Error(
          `${failed === null ? `the session exited ${status}` : `${where(failed)}\nexited ${status}`}\n` +
            `stdout: ${last?.out.slice(0, 2000)}\nstderr: ${last?.err.slice(0, 2000)}\n${stderr}\n${server}`,
        );
      }
      const wrong = ran.flatMap((r) => {
        const w = wrongOutput(r);
        return w === null ? [] : [`${where(r.command)}\n  ${w}`];
      });
      expect(wrong).toEqual([]);
      expect(stillRunning, "a service outlived Ctrl-C").toBe("");
    },
    240_000,
  );
});
