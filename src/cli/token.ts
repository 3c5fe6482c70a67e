/**
 * `onbehalf token inspect JWT | token verify JWT` and `onbehalf dev-token …`.
 */

import { OnbehalfError } from "../errors.js";
import { configuredMcpResource, devKeyPath, trustedIssuers } from "../govern/bootstrap.js";
import { loadConfigFile } from "../govern/config.js";
import { DEV_AUDIENCE, mintDevToken } from "../identity/dev-issuer.js";
import { loadOrCreateSigningKey } from "../identity/keys.js";
import { createIdentity } from "../identity/verify.js";
import {
  type Command,
  configPath,
  EXIT_FINDING,
  EXIT_OK,
  type Io,
  list,
  type ParsedArgs,
  text,
  UsageError,
} from "./args.js";

export const tokenInspect: Command = {
  name: "token inspect",
  operands: ["JWT"],
  summary: "decode a token's header and claims (NOT a verification)",
  flags: {},
  run({ positionals }, io) {
    const [header, payload] = positionals[0]!.split(".").slice(0, 2).map(decodeSegment);
    io.out(JSON.stringify({ header, payload }, null, 2));
    io.err("note: decoded only; the signature was NOT verified (use `onbehalf token verify`)");
    return EXIT_OK;
  },
};

export const tokenVerify: Command = {
  name: "token verify",
  operands: ["JWT"],
  summary: "verify a token against the config's issuers; exit 1 if it fails",
  flags: {},
  async run({ values, positionals }, io) {
    const loaded = loadConfigFile(configPath(values.config));
    const identity = createIdentity({ issuers: trustedIssuers(loaded) });
    try {
      const principal = await identity.verify(positionals[0]!);
      io.out(JSON.stringify(principal, null, 2));
      return EXIT_OK;
    } catch (e) {
      if (!(e instanceof OnbehalfError)) throw e;
      io.out(`invalid: ${e.code}: ${e.message}`);
      return EXIT_FINDING;
    } finally {
      identity.close();
    }
  },
};

export const devToken: Command = {
  name: "dev-token",
  summary: "mint a development token (only with dev_issuer: true in the config)",
  flags: {
    sub: text("S", "the user (subject)", { required: true }),
    tenant: text("T", "the user's tenant", { required: true }),
    scopes: text('"a b"', "the scopes it grants, space- or comma-separated"),
    email: text("E", "the user's email"),
    roles: text('"r"', "the user's roles, space- or comma-separated"),
    ttl: text("SECONDS", "how long it is valid, 1 to 86400", { default: "3600" }),
    audience: text(
      "A",
      `its aud: ${DEV_AUDIENCE} (the HTTP API) or the MCP gateway's resource, <public_url>/mcp`,
      {
        default: DEV_AUDIENCE,
      },
    ),
  },
  run: devTokenCommand,
};

async function devTokenCommand({ values }: ParsedArgs, io: Io): Promise<number> {
  const loaded = loadConfigFile(configPath(values.config));
  if (!loaded.config.dev_issuer) {
    io.err("dev-token works only when the config says dev_issuer: true (development only)");
    return EXIT_FINDING;
  }
  const ttl = Number(values.ttl);
  if (!Number.isInteger(ttl) || ttl <= 0 || ttl > 86_400)
    throw new UsageError("--ttl must be 1 to 86400 seconds");
  const key = loadOrCreateSigningKey(devKeyPath(loaded));
  const accepted = [DEV_AUDIENCE, configuredMcpResource(loaded.config.server)];
  if (!accepted.includes(String(values.audience))) {
    io.err(
      `note: this config's server accepts development tokens for ${accepted.join(" or ")}, not this audience`,
    );
  }
  io.out(
    mintDevToken(key, {
      sub: String(values.sub),
      tenant: String(values.tenant),
      scopes: list(values.scopes),
      ...(typeof values.email === "string" ? { email: values.email } : {}),
      roles: list(values.roles),
      ttlSeconds: ttl,
      audience: String(values.audience),
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
