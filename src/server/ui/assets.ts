/**
 * The console's built files (`dist/ui`, made by `npm run build` and shipped in the package): read once at start
 * and served from memory under `/ui/`, with a Content-Security-Policy that lets the page load nothing but its
 * own files and talk to nothing but this server. Nothing is fetched from anywhere else at run time.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { extname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";
import type { FastifyInstance, FastifyReply } from "fastify";
import { OnbehalfError } from "../../errors.js";

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".json": "application/json",
};

const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "font-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

interface Asset {
  readonly body: Buffer;
  readonly type: string;
}

/**
 * Where the built console is: `dist/ui` beside the compiled server (`dist/server/ui/` → `dist/ui`), or, when the
 * server runs from its TypeScript sources (tests, tsx), the repository's `dist/ui`.
 */
export function consoleDir(): string {
  const here = fileURLToPath(new URL(".", import.meta.url));
  const candidates = [join(here, "../../ui"), join(here, "../../../dist/ui")];
  return candidates.find((d) => existsSync(join(d, "index.html"))) ?? candidates[0]!;
}

function readAssets(dir: string): Map<string, Asset> {
  const assets = new Map<string, Asset>();
  if (!existsSync(join(dir, "index.html"))) return assets;
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const path = join(d, name);
      if (statSync(path).isDirectory()) walk(path);
      else
        assets.set(relative(dir, path).split(sep).join("/"), {
          body: readFileSync(path),
          type: TYPES[extname(name)] ?? "application/octet-stream",
        });
    }
  };
  walk(dir);
  return assets;
}

export function consoleAssetRoutes(app: FastifyInstance, dir: string = consoleDir()): void {
  const assets = readAssets(dir);
  const send = (reply: FastifyReply, name: string) => {
    const asset = assets.get(name);
    if (asset === undefined) {
      throw new OnbehalfError(
        "ERR_NOT_FOUND",
        assets.size === 0 ? "the console is not built: run npm run build" : `no console file ${name}`,
      );
    }
    reply
      .header("content-security-policy", CSP)
      .header("x-content-type-options", "nosniff")
      .header("referrer-policy", "no-referrer")
      .header("x-frame-options", "DENY")
      // Built file names carry a content hash: they never change. The page itself is always asked again.
      .header(
        "cache-control",
        name.startsWith("assets/") ? "public, max-age=31536000, immutable" : "no-cache",
      );
    return reply.type(asset.type).send(asset.body);
  };
  app.get("/ui", async (_req, reply) => reply.redirect("/ui/", 302));
  app.get("/ui/", async (_req, reply) => send(reply, "index.html"));
  app.get<{ Params: { "*": string } }>("/ui/assets/*", async (req, reply) =>
    send(reply, `assets/${req.params["*"]}`),
  );
  app.get("/ui/favicon.svg", async (_req, reply) => send(reply, "favicon.svg"));
}
