/** The console's shell: who is signed in, the navigation, and the page the location's hash names. */
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { Access } from "./access.js";
import { api, type Me, setCsrf } from "./api.js";
import { Explorer } from "./explorer.js";
import { Health } from "./health.js";
import { Inbox } from "./inbox.js";
import { RecordView } from "./record.js";
import { SignIn } from "./sign-in.js";
import "./style.css";

function useHash(): string {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return hash;
}

function App() {
  const [me, setMe] = useState<Me | null | undefined>(undefined);
  const hash = useHash();
  useEffect(() => {
    api<Me>("GET", "/ui/api/me").then(
      (m) => {
        setCsrf(m.csrf);
        setMe(m);
      },
      () => setMe(null),
    );
  }, []);
  if (me === undefined) return <p class="muted">Loading…</p>;
  if (me === null)
    return (
      <SignIn
        onSignedIn={(m) => {
          setCsrf(m.csrf);
          setMe(m);
        }}
      />
    );
  const signOut = async () => {
    await api("DELETE", "/ui/session").catch(() => {});
    setCsrf(null);
    setMe(null);
  };
  const [page, ...rest] = hash.replace(/^#\/?/, "").split("/");
  const pages: [string, string][] = [
    ["audit", "Audit"],
    ["approvals", "Approvals"],
    ...(me.role === "admin"
      ? ([
          ["access", "Who can do what"],
          ["health", "Health"],
        ] as [string, string][])
      : []),
  ];
  const current = pages.some(([id]) => id === page) ? page : "audit";
  return (
    <>
      <header>
        <strong>onbehalf</strong>
        <nav aria-label="Console pages">
          {pages.map(([id, label]) => (
            <a key={id} href={`#/${id}`} aria-current={current === id ? "page" : undefined}>
              {label}
            </a>
          ))}
        </nav>
        <span class="who">
          {me.who} · {me.role}
          {me.tenant === null ? "" : ` of ${me.tenant}`}
        </span>
        <button type="button" onClick={signOut}>
          Sign out
        </button>
      </header>
      <main>
        <Page me={me} page={current ?? "audit"} rest={rest.map(decodeURIComponent)} />
      </main>
    </>
  );
}

function Page({ me, page, rest }: { me: Me; page: string; rest: string[] }) {
  if (page === "audit" && rest[0] === "record" && rest[1] !== undefined && rest[2] !== undefined)
    return <RecordView log={rest[1]} seq={Number(rest[2])} />;
  if (page === "audit" && rest[0] === "run" && rest[1] !== undefined)
    return <Explorer me={me} run={rest[1]} key={`run-${rest[1]}`} />;
  if (page === "approvals") return <Inbox />;
  if (page === "access") return <Access />;
  if (page === "health") return <Health />;
  return <Explorer me={me} key="explorer" />;
}

render(<App />, document.getElementById("app")!);
