import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

/** The repository root (this file is test/docs/markdown.ts). */
export const ROOT = join(import.meta.dirname, '..', '..');

/** Every file under `dir` (relative to the root), depth first, skipping the directories named in `skip`. */
export function filesUnder(dir: string, skip: ReadonlySet<string> = new Set()): string[] {
  const abs = join(ROOT, dir);
  if (!statSync(abs).isDirectory()) return [dir];
  const out: string[] = [];
  for (const entry of readdirSync(abs, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    const path = join(dir, entry.name);
    if (skip.has(path) || entry.name === 'node_modules' || entry.name.startsWith('.')) continue;
    out.push(...(entry.isDirectory() ? filesUnder(path, skip) : [path]));
  }
  return out;
}

/** README.md and every Markdown file of the manual. */
export function manualFiles(): string[] {
  return ['README.md', ...filesUnder('docs').filter((f) => f.endsWith('.md'))];
}

export const read = (file: string): string => readFileSync(join(ROOT, file), 'utf8');
export const rel = (abs: string): string => relative(ROOT, abs);

/**
 * The text of a Markdown document with fenced code blocks and inline code spans blanked out
 * (line numbers kept): what is written there is code, not a link.
 */
export function proseOf(markdown: string): string[] {
  let fenced = false;
  return markdown.split('\n').map((line) => {
    if (/^\s*(```|~~~)/.test(line)) {
      fenced = !fenced;
      return '';
    }
    if (fenced) return '';
    return line.replace(/`+[^`]*`+/g, '');
  });
}

export interface Link {
  line: number;
  target: string;
}

/** Inline links and images `[text](target "title")` and reference definitions `[id]: target`. */
export function linksOf(markdown: string): Link[] {
  const out: Link[] = [];
  proseOf(markdown).forEach((text, i) => {
    for (const m of text.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) out.push({ line: i + 1, target: m[1]! });
    const def = /^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)/.exec(text);
    if (def) out.push({ line: i + 1, target: def[1]! });
  });
  return out;
}
