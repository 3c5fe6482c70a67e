/**
 * Control-plane instances as an operator runs them: `onbehalf serve` in processes of their own, on one config
 * file, which a test can kill with SIGKILL or stop with SIGTERM.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";

export interface Instance {
  readonly url: string;
  readonly child: ChildProcess;
  /** Everything it printed on stderr. */
  readonly stderr: string[];
  /** Resolves with its exit code (null when killed by a signal) once it has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const running = new Set<ChildProcess>();

/** Start `onbehalf serve --config <config> --port 0` and wait until it listens (or fail with what it said). */
export async function startInstance(config: string): Promise<Instance> {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", "src/cli/main.ts", "serve", "--config", config, "--port", "0"],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  running.add(child);
  const stderr: string[] = [];
  child.stderr!.on("data", (d) => stderr.push(String(d)));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    }),
  );
  const url = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      const m = /listening on (http:\/\/\S+)/.exec(line);
      if (m !== null) resolve(m[1]!);
    });
    exited.then(({ code }) => reject(new Error(`serve exited with ${code}: ${stderr.join("")}`)));
  });
  return { url, child, stderr, exited };
}

/** A failed test must not leave servers behind: kill whatever still runs. */
export function killAll(): void {
  for (const child of running) child.kill("SIGKILL");
}

/** Poll `url/healthz` until it answers 200, for at most `ms`. */
export async function healthy(url: string, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    const status = await fetch(`${url}/healthz`).then(
      (r) => r.status,
      () => 0,
    );
    if (status === 200) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}
