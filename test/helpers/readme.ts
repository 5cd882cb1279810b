/**
 * Reads README.md's structure for test/readme.test.ts: fenced blocks with their info strings,
 * the commands in `sh runnable` blocks, sections and tables. Kept separate so the parsing can be
 * tested on its own (a parser that finds nothing would make the README test pass vacuously).
 */

export interface FencedBlock {
  /** The words after the opening fence, e.g. ["sh", "runnable"]. */
  info: string[];
  body: string;
  /** 1-based line of the opening fence. */
  line: number;
}

export function fencedBlocks(md: string): FencedBlock[] {
  const lines = md.split('\n');
  const out: FencedBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(```+)\s*(.*)$/.exec(lines[i]!);
    if (!open) continue;
    const fence = open[1]!;
    const body: string[] = [];
    let j = i + 1;
    while (j < lines.length && !lines[j]!.startsWith(fence)) body.push(lines[j++]!);
    if (j >= lines.length) throw new Error(`README line ${i + 1}: unterminated code fence`);
    out.push({ info: open[2]!.trim().split(/\s+/).filter(Boolean), body: body.join('\n'), line: i + 1 });
    i = j;
  }
  return out;
}

export interface RunnableCommand {
  command: string;
  line: number;
  /** The block's info words after `sh`, e.g. ["runnable", "fails"]. */
  tags: string[];
}

/** Commands of the `sh runnable` blocks: one per line (a trailing `\` continues), comments skipped. */
export function runnableCommands(md: string): RunnableCommand[] {
  const out: RunnableCommand[] = [];
  for (const b of fencedBlocks(md)) {
    if (b.info[0] !== 'sh' || !b.info.includes('runnable')) continue;
    const lines = b.body.split('\n');
    for (let i = 0; i < lines.length; i++) {
      let cmd = lines[i]!;
      const line = b.line + 1 + i;
      while (cmd.endsWith('\\') && i + 1 < lines.length) cmd = `${cmd.slice(0, -1)}${lines[++i]!}`;
      if (cmd.trim() === '' || cmd.trim().startsWith('#')) continue;
      out.push({ command: cmd.trim(), line, tags: b.info.slice(1) });
    }
  }
  return out;
}

/** The text of a `## heading` section, up to the next heading of the same or higher level. */
export function section(md: string, heading: string): string {
  const lines = md.split('\n');
  const start = lines.findIndex((l) => /^#{1,6} /.test(l) && l.replace(/^#+\s*/, '').startsWith(heading));
  if (start < 0) throw new Error(`README has no section "${heading}"`);
  const level = /^#+/.exec(lines[start]!)![0].length;
  let end = start + 1;
  while (end < lines.length && !(new RegExp(`^#{1,${level}} `).test(lines[end]!))) end++;
  return lines.slice(start + 1, end).join('\n');
}

/** Rows of the Markdown tables in `text` (header and separator rows dropped), cells trimmed. */
export function tableRows(text: string): string[][] {
  const rows: string[][] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!.trim();
    if (!l.startsWith('|')) continue;
    const next = lines[i + 1]?.trim() ?? '';
    if (/^\|[\s|:-]+\|$/.test(next)) {
      i++; // header row + separator
      continue;
    }
    if (/^\|[\s|:-]+\|$/.test(l)) continue;
    rows.push(l.replace(/^\||\|$/g, '').split('|').map((c) => c.trim()));
  }
  return rows;
}

/** GitHub's heading anchors: lower-case, punctuation dropped, spaces to dashes. */
export function headingAnchors(md: string): Set<string> {
  const anchors = new Set<string>();
  let inFence = false;
  for (const l of md.split('\n')) {
    if (l.startsWith('```')) inFence = !inFence;
    if (inFence) continue;
    const m = /^#{1,6} (.*)$/.exec(l);
    if (!m) continue;
    const slug = m[1]!
      .trim()
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    anchors.add(slug);
  }
  return anchors;
}

export function camelCase(envName: string): string {
  return envName.toLowerCase().replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
}
