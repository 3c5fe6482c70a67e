/**
 * `onbehalf serve`: run the control plane until SIGTERM or SIGINT, then flush the audit and exit; SIGHUP reloads
 * the config file. With the development issuer on, it says so loudly and prints a ready token and a call to try.
 */

import { dirname, relative, resolve } from "node:path";
import { LogLevel } from "../config/server.js";
import { OnbehalfError } from "../errors.js";
import { devAdminToken, devKeyPath } from "../govern/bootstrap.js";
import { loadConfigFile } from "../govern/config.js";
import { mintDevToken } from "../identity/dev-issuer.js";
import { loadOrCreateSigningKey } from "../identity/keys.js";
import { startServer } from "../server/app.js";
import { type Command, configPath, EXIT_OK, type Io, type ParsedArgs, text, UsageError } from "./args.js";

export const serve: Command = {
  name: "serve",
  summary: "run the control plane (the HTTP API of docs/server.md) until SIGTERM or SIGINT",
  flags: {
    port: text("N", "listen on this port, 0 for any free one (default: the config's server.port)"),
    host: text("HOST", "listen on this address (default: the config's server.host)"),
    "log-level": text("LEVEL", "the request log's level: info (default), debug, warn, error, silent"),
    "log-requests": { type: "boolean", help: "log every request (the same as --log-level info)" },
  },
  notes:
    "On SIGTERM or SIGINT it flushes the audit, then exits. With dev_issuer: true it prints a token to try.",
  run: serveCommand,
};

async function serveCommand({ values }: ParsedArgs, io: Io): Promise<number> {
  const file = configPath(values.config);
  const port = values.port === undefined ? undefined : Number(values.port);
  if (port !== undefined && (!Number.isInteger(port) || port < 0 || port > 65535))
    throw new UsageError("--port must be 0 to 65535");
  const level = values["log-level"] ?? (values["log-requests"] === true ? "info" : undefined);
  const logLevel = level === undefined ? undefined : LogLevel.safeParse(level);
  if (logLevel !== undefined && !logLevel.success)
    throw new UsageError(`--log-level must be one of ${LogLevel.options.join(", ")}`);
  const loaded = loadConfigFile(file);
  // Listen for SIGTERM/SIGINT before anything starts: a signal that arrives while the server starts (or just
  // after it said it listens) must still flush the audit, not kill the process with the default action.
  const stopped = new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
  });
  // SIGHUP reloads the file (its default action would kill the server without flushing the audit).
  let reload = async () =>
    io.err("onbehalf: SIGHUP while starting: not reloaded; send it again once listening");
  const onHangup = () => void reload();
  process.on("SIGHUP", onHangup);
  const server = await startServer({
    config: file,
    ...(port === undefined ? {} : { port }),
    ...(typeof values.host === "string" ? { host: values.host } : {}),
    ...(logLevel?.success === true ? { log: { level: logLevel.data } } : {}),
    warn: (m) => io.err(`warning: ${m}`),
  });
  io.out(
    `onbehalf control plane listening on ${server.url} (config ${file}, audit log ${server.governor.auditLog.logId})`,
  );
  io.out(server.configSource);
  io.out(`console: ${server.url}/ui (docs/console.md)`);
  reload = async () => {
    try {
      io.err(`onbehalf: ${await server.reload()}`);
    } catch (e) {
      const why = e instanceof OnbehalfError ? `${e.code}: ${e.message}` : (e as Error).message;
      io.err(`onbehalf: not reloaded, the config in force stays: ${why}`);
    }
  };
  if (loaded.config.dev_issuer) {
    io.err(
      [
        "",
        "  !!! dev_issuer is ON: this server trusts tokens signed by the local development key.",
        "  !!! Anyone who can read that key can act as any user. Never enable it in production.",
        "",
      ].join("\n"),
    );
    const tenant = loaded.config.tenants[0]?.id ?? "acme";
    const token = mintDevToken(loadOrCreateSigningKey(devKeyPath(loaded)), {
      sub: "alice",
      tenant,
      scopes: ["customers:read", "refunds:write"],
      email: "alice@acme.example",
      ttlSeconds: 8 * 3600,
    });
    const admin = devAdminToken(loaded);
    const call = `-H "authorization: Bearer $TOKEN" -H 'content-type: application/json'`;
    const refund = `"tool":"issue_refund","args":{"order":"o-1","amount":900},"agent":{"name":"support-bot"}`;
    io.out(`
a development token for alice (tenant ${tenant}, scopes customers:read refunds:write), valid 8 hours, and the
development admin token (kept in ${relativeToCwd(resolve(dirname(devKeyPath(loaded)), "dev-admin.token"))}):
  export URL=${server.url}
  export TOKEN=${token}
  export ADMIN=${admin}

try a governed call (a refund over 500 asks for a human):
  curl -s $URL/v1/check ${call} \\
    -d '{${refund}}'

then open the console, find the call (verified in your browser) and approve it from the inbox:
  ${server.url}/ui   (the "Development sign-in" button, or sign in with $ADMIN)

see what waits for a human, and approve it (the approval id is in both answers):
  curl -s "$URL/v1/approvals?status=pending" -H "authorization: Bearer $ADMIN"
  curl -s $URL/v1/approvals/APPROVAL_ID -H "authorization: Bearer $ADMIN" -H 'content-type: application/json' \\
    -d '{"decision":"approve"}'

ask again with the approval: now it is allowed
  curl -s $URL/v1/check ${call} \\
    -d '{${refund},"approval":"APPROVAL_ID"}'

read the audit, and check that nothing in it was edited:
  curl -s "$URL/v1/audit?limit=5" -H "authorization: Bearer $ADMIN"
  npx onbehalf audit verify --config ${file}

mint other tokens:
  npx onbehalf dev-token --config ${file} --sub bob --tenant ${tenant} --scopes "customers:read admin"

endpoints: docs/server.md · stop with Ctrl-C (the audit is flushed)`);
  }
  await stopped;
  io.err("shutting down: flushing the audit…");
  await server.close();
  process.off("SIGHUP", onHangup);
  return EXIT_OK;
}

function relativeToCwd(path: string): string {
  const r = relative(process.cwd(), path);
  return r.startsWith("..") ? path : r;
}
