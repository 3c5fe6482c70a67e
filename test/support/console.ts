/**
 * The console in tests: its page built (dist/ui, as `npm run build` makes it) when the sources are newer, a
 * real headless Chromium (Debian's `chromium`, installed by .ci/run) driven by playwright-core, and a cookie
 * jar for HTTP tests of its API.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { type Browser, chromium } from "playwright-core";

const ROOT = join(import.meta.dirname, "../..");
export const CHROMIUM = process.env["ONBEHALF_TEST_CHROMIUM"] ?? "/usr/bin/chromium";

function newest(path: string): number {
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  return Math.max(0, ...readdirSync(path).map((name) => newest(join(path, name))));
}

/** Build dist/ui unless it is newer than everything it is built from. */
export function ensureConsoleBuilt(): void {
  const index = join(ROOT, "dist/ui/index.html");
  const sources = Math.max(
    newest(join(ROOT, "console")),
    newest(join(ROOT, "src/audit/canonical.ts")),
    newest(join(ROOT, "package-lock.json")),
  );
  if (existsSync(index) && statSync(index).mtimeMs >= sources) return;
  execFileSync(
    process.execPath,
    [join(ROOT, "node_modules/vite/bin/vite.js"), "build", "--config", "console/vite.config.ts"],
    {
      cwd: ROOT,
      stdio: "pipe",
    },
  );
}

/** A headless Chromium with a fresh profile, nothing in the background talking to the network. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** A session cookie kept across requests (what a browser does), for HTTP tests of the console's API. */
export class CookieJar {
  cookie: string | null = null;

  /** Remember the session cookie a response sets (or clears). */
  take(headers: Headers): void {
    const set = headers.get("set-cookie");
    if (set === null) return;
    const [pair] = set.split(";");
    this.cookie = pair !== undefined && !pair.endsWith("=") ? pair : null;
  }
}
