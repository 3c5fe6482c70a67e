/** Sign-in: an admin token or an IdP token, or the development sign-in when the server trusts its dev issuer. */
import { useEffect, useState } from "preact/hooks";
import { api, type Me } from "./api.js";
import { ErrorNote } from "./ui.js";

interface Info {
  readonly dev_sign_in: boolean;
  readonly approve_scope: string;
  readonly admin_scope: string | null;
}

export function SignIn({ onSignedIn }: { onSignedIn: (me: Me) => void }) {
  const [info, setInfo] = useState<Info | null>(null);
  const [token, setToken] = useState("");
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    api<Info>("GET", "/ui/api/info").then(setInfo, setError);
  }, []);
  const signIn = async (body: unknown) => {
    setError(null);
    try {
      onSignedIn(await api<Me>("POST", "/ui/session", body));
    } catch (e) {
      setError(e);
    } finally {
      setToken("");
    }
  };
  return (
    <main class="sign-in">
      <h1>onbehalf console</h1>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void signIn({ token: token.trim() });
        }}
      >
        <label for="token">Admin token or identity provider token</label>
        <input
          id="token"
          name="token"
          type="password"
          autocomplete="off"
          value={token}
          onInput={(e) => setToken((e.target as HTMLInputElement).value)}
          required
        />
        <button type="submit">Sign in</button>
      </form>
      <p class="muted">
        An IdP token signs in as an approver of its tenant when it grants{" "}
        <code>{info?.approve_scope ?? "onbehalf:approve"}</code>
        {info?.admin_scope ? (
          <>
            , as an admin when it grants <code>{info.admin_scope}</code>
          </>
        ) : null}
        . The token is sent once; the session is a cookie scripts cannot read.
      </p>
      {info?.dev_sign_in ? (
        <p>
          <button type="button" onClick={() => void signIn({ dev: true })}>
            Development sign-in (dev_issuer is on)
          </button>
        </p>
      ) : null}
      <ErrorNote error={error} />
    </main>
  );
}
