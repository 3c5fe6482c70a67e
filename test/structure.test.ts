/**
 * The folders of src/ and what each may import (docs/decisions.md, "The map"): a concern never reaches up into
 * one built on it, and no module imports itself back through another. Read from the source, every import.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, normalize, relative } from "node:path";
import { describe, expect, it } from "vitest";

const SRC = normalize(join(import.meta.dirname, "../src"));

/** Folder → the folders it may import ("." is the files at the top of src/: errors, text, retry, decision). */
const MAY_IMPORT: Record<string, readonly string[]> = {
  ".": ["config"],
  config: ["."],
  identity: [".", "config"],
  context: [".", "config", "identity"],
  audit: ["."],
  limits: ["."],
  policy: [".", "config", "identity"],
  govern: [".", "config", "identity", "context", "audit", "limits", "policy"],
  adapters: [".", "config", "identity", "context", "audit", "policy", "govern"],
  server: [".", "config", "identity", "context", "audit", "limits", "policy", "govern"],
  cli: [".", "config", "identity", "context", "audit", "limits", "policy", "govern", "server"],
};
/** The public entry re-exports every folder. */
const ENTRY = "index.ts";

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sources(path);
    return name.endsWith(".ts") ? [path] : [];
  });
}

const IMPORT =
  /(?:^|\n)\s*(?:import|export)\b[^;]*?\bfrom\s+"(\.{1,2}\/[^"]+)"|import\("(\.{1,2}\/[^"]+)"\)/g;

/** Every relative import of every file under src/, as paths relative to src/. */
function graph(): Map<string, string[]> {
  const edges = new Map<string, string[]>();
  for (const file of sources(SRC)) {
    const from = relative(SRC, file);
    const text = readFileSync(file, "utf8");
    const to = [...text.matchAll(IMPORT)].map((m) =>
      relative(SRC, join(dirname(file), (m[1] ?? m[2])!.replace(/\.js$/, ".ts"))),
    );
    edges.set(from, to);
  }
  return edges;
}

const folderOf = (path: string): string => (path.includes("/") ? path.split("/")[0]! : ".");

describe("the structure of src/", () => {
  const edges = graph();

  it("knows every folder: a new one is placed on the map before it is used", () => {
    const folders = new Set([...edges.keys()].map(folderOf));
    expect([...folders].filter((f) => MAY_IMPORT[f] === undefined)).toEqual([]);
    expect(edges.size).toBeGreaterThan(50); // the walk found the sources
  });

  it("imports only downwards: each folder from the folders beneath it", () => {
    const wrong: string[] = [];
    for (const [from, targets] of edges) {
      if (from === ENTRY) continue;
      const allowed = MAY_IMPORT[folderOf(from)] ?? [];
      for (const to of targets) {
        const folder = folderOf(to);
        if (folder !== folderOf(from) && !allowed.includes(folder)) wrong.push(`${from} → ${to}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it("has no import cycle between files", () => {
    const cycles: string[] = [];
    const state = new Map<string, "open" | "done">();
    const stack: string[] = [];
    const visit = (file: string): void => {
      state.set(file, "open");
      stack.push(file);
      for (const next of edges.get(file) ?? []) {
        if (state.get(next) === "open") cycles.push([...stack.slice(stack.indexOf(next)), next].join(" → "));
        else if (!state.has(next)) visit(next);
      }
      stack.pop();
      state.set(file, "done");
    };
    for (const file of edges.keys()) if (!state.has(file)) visit(file);
    expect(cycles).toEqual([]);
  });

  it("is checked for real: a reach upwards or a cycle is caught", () => {
    const folder = (from: string, to: string) =>
      folderOf(to) === folderOf(from) || (MAY_IMPORT[folderOf(from)] ?? []).includes(folderOf(to));
    expect(folder("audit/log.ts", "policy/decide.ts")).toBe(false);
    expect(folder("identity/verify.ts", "context/run.ts")).toBe(false);
    expect(folder("govern/pipeline.ts", "policy/decide.ts")).toBe(true);
    expect([..."x".matchAll(IMPORT)]).toEqual([]);
    const sample =
      'import { a } from "../policy/decide.js";\nexport { b } from "./c.js";\nawait import("../d.js");';
    expect([...sample.matchAll(IMPORT)].map((m) => m[1] ?? m[2])).toEqual([
      "../policy/decide.js",
      "./c.js",
      "../d.js",
    ]);
  });
});
