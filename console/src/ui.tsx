/** Small pieces every page uses: an error note, a decision badge, times. */
import { ApiError } from "./api.js";

/** An error as the page shows it: the server's code and message. */
export function ErrorNote({ error }: { error: unknown }) {
  if (error === null || error === undefined) return null;
  const text = error instanceof ApiError ? `${error.code}: ${error.message}` : String(error);
  return (
    <p class="error" role="alert">
      {text}
    </p>
  );
}

/** allow / deny / ask, coloured, with the word always there (never colour alone). */
export function Verdict({ value }: { value: string }) {
  return <span class={`verdict ${value}`}>{value}</span>;
}

/** An ISO time as the reader's local time, to the second. */
export function when(iso: string): string {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString(undefined, { hour12: false });
}

/** A `datetime-local` input's value as an ISO time, or undefined when empty. */
export function isoOf(local: string): string | undefined {
  if (local === "") return undefined;
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
}
