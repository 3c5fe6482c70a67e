/**
 * The shell commands of a Markdown file, as a reader would copy them: every fenced block whose language is
 * `sh`, `bash`, `shell` or `console`, in order. A synopsis or an expected output goes in a ```text fence.
 *
 * - `sh` (`bash`, `shell`): every line is a command, a command's `\` continuation, or a line of its
 *   multi-line quoted argument; a line starting with `#` outside a command is a comment, or (`# {…}`,
 *   `# […]`) the answer the command before it gives.
 * - `console`: commands are the lines starting with `$ `; the lines after one are its output.
 */

export interface DocCommand {
  /** The file it is in, relative to the repository root. */
  readonly file: string;
  /** Its first line in the file (1-based). */
  readonly line: number;
  /** The command as the doc shows it (continuation lines kept). */
  readonly text: string;
  /** The output the doc shows for it: `# {…}` lines of an sh block (without `# `), or a console block's. */
  readonly expected: readonly string[];
}

const SHELL = new Set(["sh", "bash", "shell", "console"]);

/** Whether `text` leaves a quote open (so the command goes on on the next line). */
function openQuote(text: string): boolean {
  let quote: "'" | '"' | null = null;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quote === "'") {
      if (c === "'") quote = null;
    } else if (c === "\\") {
      i++;
    } else if (quote === '"') {
      if (c === '"') quote = null;
    } else if (c === "'" || c === '"') {
      quote = c;
    } else if (c === "#" && (i === 0 || /\s/.test(text[i - 1]!))) {
      // a comment runs to the end of its line
      const end = text.indexOf("\n", i);
      if (end < 0) return false;
      i = end;
    }
  }
  return quote !== null;
}

/** The commands of one fenced block, whose first line is line `first` of the file. */
function commandsOf(file: string, lang: string, lines: string[], first: number): DocCommand[] {
  const out: { file: string; line: number; text: string; expected: string[] }[] = [];
  if (lang === "console") {
    lines.forEach((l, i) => {
      if (l.startsWith("$ ")) out.push({ file, line: first + i, text: l.slice(2), expected: [] });
      else if (l.trim() !== "") out.at(-1)?.expected.push(l);
    });
    return out;
  }
  let current: { line: number; text: string } | null = null;
  lines.forEach((l, i) => {
    if (current !== null) {
      current.text += `\n${l}`;
    } else if (l.trim() === "") {
      return;
    } else if (l.trimStart().startsWith("#")) {
      const answer = l.trimStart().slice(1).trim();
      if (/^[[{]/.test(answer)) out.at(-1)?.expected.push(answer);
      return;
    } else {
      current = { line: first + i, text: l };
    }
    if (!current.text.endsWith("\\") && !openQuote(current.text)) {
      out.push({ file, line: current.line, text: current.text, expected: [] });
      current = null;
    }
  });
  if (current !== null)
    throw new Error(`${file}:${(current as { line: number }).line}: unterminated command`);
  return out;
}

/**
 * Every shell command of `markdown` (the contents of `file`), in order.
 *
 * @example
 * commandsIn("docs/cli.md", "```sh\nnpx onbehalf --help\n```\n") // [{ file, line: 2, text: "npx onbehalf --help", … }]
 */
export function commandsIn(file: string, markdown: string): DocCommand[] {
  const lines = markdown.split("\n");
  const commands: DocCommand[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```(\w*)\s*$/.exec(lines[i]!);
    if (open === null) continue;
    const indent = open[1]!.length;
    const lang = open[2]!;
    const start = i + 1;
    let end = start;
    while (end < lines.length && !/^\s*```\s*$/.test(lines[end]!)) end++;
    if (SHELL.has(lang)) {
      const body = lines
        .slice(start, end)
        .map((l) => l.slice(Math.min(indent, l.length - l.trimStart().length)));
      commands.push(...commandsOf(file, lang, body, start + 1));
    }
    i = end;
  }
  return commands;
}
