import { createRemoteJWKSet, jwtVerify } from "jose";

type Act = { sub: string; act?: Act };

/** Who a request from the onbehalf gateway acts for: verify its on-behalf-of token, then read human and chain. */
export function oboVerifier(gateway: string, jwksUrl: string, me: string) {
  const keys = createRemoteJWKSet(new URL(jwksUrl));
  return async (authorization: string | undefined) => {
    const token = authorization?.replace(/^Bearer /i, "") ?? "";
    const { payload } = await jwtVerify(token, keys, {
      issuer: gateway,
      audience: me,
      algorithms: ["EdDSA", "ES256"],
    });
    const chain: string[] = []; // outermost first: the current agent is the outermost act
    for (let a = payload["act"] as Act | undefined; a !== undefined; a = a.act) chain.unshift(a.sub);
    return {
      user: payload.sub,
      tenant: payload["tenant"],
      scopes: String(payload["scope"]).split(" "),
      chain,
    };
  };
}
