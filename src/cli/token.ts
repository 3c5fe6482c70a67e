/**
 * `onbehalf token inspect JWT | token verify JWT` and `onbehalf dev-token …`.
 */

import { OnbehalfError } from "../errors.js";
import { devKeyPath, trustedIssuers } from "../govern/bootstrap.js";
import { loadConfigFile } from "../govern/config.js";
import { mintDevToken } from "../identity/dev-issuer.js";
import { loadOrCreateSigningKey } from "../identity/keys.js";
import { createIdentity } from "../identity/verify.js";
import { configPath, EXIT_FINDING, EXIT_OK, type Io, list, parse, required, UsageError } from "./args.js";

export const TOKEN_USAGE = `usage:
  onbehalf token inspect JWT                 decode header and claims (NOT a verification)
  onbehalf token verify JWT [--config F]     verify against the config's issuers; exit 1 if it fails
  onbehalf dev-token --sub S --tenant T --scopes "a b" [--email E] [--roles "r"] [--ttl SECONDS] [--config F]
                                             mint a development token (only with dev_issuer: true)`;

export async function tokenCommand(argv: string[], io: Io): Promise<number> {
  const [sub, ...rest] = argv;
  const { values, positionals } = parse(rest, {});
  const jwt = positionals[0];
  if (sub !== "inspect" && sub !== "verify") {
    throw new UsageError(
      sub === undefined ? "token needs a subcommand" : `unknown token subcommand "${sub}"`,
    );
  }
  if (jwt === undefined) throw new UsageError(`token ${sub} needs a JWT`);
  if (sub === "inspect") {
    const [header, payload] = jwt.split(".").slice(0, 2).map(decodeSegment);
    io.out(JSON.stringify({ header, payload }, null, 2));
    io.err("note: decoded only; the signature was NOT verified (use `onbehalf token verify`)");
    return EXIT_OK;
  }
  const loaded = loadConfigFile(configPath(values.config));
  const identity = createIdentity({ issuers: trustedIssuers(loaded) });
  try {
    const principal = await identity.verify(jwt);
    io.out(JSON.stringify(principal, null, 2));
    return EXIT_OK;
  } catch (e) {
    if (!(e instanceof OnbehalfError)) throw e;
    io.out(`invalid: ${e.code}: ${e.message}`);
    return EXIT_FINDING;
  } finally {
    identity.close();
  }
}

export async function devTokenCommand(argv: string[], io: Io): Promise<number> {
  const { values } = parse(argv, {
    sub: { type: "string" },
    tenant: { type: "string" },
    scopes: { type: "string" },
    email: { type: "string" },
    roles: { type: "string" },
    ttl: { type: "string", default: "3600" },
  });
  const loaded = loadConfigFile(configPath(values.config));
  if (!loaded.config.dev_issuer) {
    io.err("dev-token works only when the config says dev_issuer: true (development only)");
    return EXIT_FINDING;
  }
  const ttl = Number(values.ttl);
  if (!Number.isInteger(ttl) || ttl <= 0 || ttl > 86_400)
    throw new UsageError("--ttl must be 1 to 86400 seconds");
  const key = loadOrCreateSigningKey(devKeyPath(loaded));
  io.out(
    mintDevToken(key, {
      sub: required(values.sub, "sub"),
      tenant: required(values.tenant, "tenant"),
      scopes: list(values.scopes),
      ...(typeof values.email === "string" ? { email: values.email } : {}),
      roles: list(values.roles),
      ttlSeconds: ttl,
    }),
  );
  return EXIT_OK;
}

function decodeSegment(segment: string): unknown {
  try {
    return JSON.parse(Buffer.from(segment, "base64url").toString("utf8"));
  } catch {
    throw new UsageError("that is not a JWT (expected three base64url segments with JSON header and claims)");
  }
}
