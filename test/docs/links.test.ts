import { existsSync } from 'node:fs';
import { dirname, isAbsolute, join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { linksOf, manualFiles, read, ROOT } from './markdown.js';

// A link in the README or the manual that leaves the repository, or names a file that is not
// there, is dead for everyone who clones it.
const external = /^[a-z][a-z0-9+.-]*:/i;

function brokenLinks(file: string): string[] {
  const broken: string[] = [];
  for (const { line, target } of linksOf(read(file))) {
    if (external.test(target) || target.startsWith('#')) continue;
    const path = decodeURI(target.replace(/[#?].*$/, ''));
    const resolved = isAbsolute(path) ? join(ROOT, path) : join(ROOT, dirname(file), path);
    const inside = relative(ROOT, resolved);
    if (inside.startsWith('..') || isAbsolute(inside)) broken.push(`${file}:${line}: ${target} leaves the repository`);
    else if (!existsSync(resolved)) broken.push(`${file}:${line}: ${target} does not exist (${inside})`);
  }
  return broken;
}

/** GitHub's anchors for the headings of a Markdown document (`## GET /api/review` → `get-apireview`). */
function anchorsOf(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced;
    const m = fenced ? null : /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!m) continue;
    const slug = m[1]!.replace(/`/g, '').toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-');
    const n = seen.get(slug) ?? 0;
    seen.set(slug, n + 1);
    out.add(n === 0 ? slug : `${slug}-${n}`);
  }
  return out;
}

function brokenAnchors(file: string): string[] {
  const broken: string[] = [];
  for (const { line, target } of linksOf(read(file))) {
    const hash = target.indexOf('#');
    if (external.test(target) || hash < 0) continue;
    const path = target.slice(0, hash);
    if (path !== '' && !path.endsWith('.md')) continue;
    const doc = path === '' ? file : relative(ROOT, join(ROOT, dirname(file), decodeURI(path)));
    if (!existsSync(join(ROOT, doc))) continue; // reported by the link check
    if (!anchorsOf(read(doc)).has(decodeURIComponent(target.slice(hash + 1)))) broken.push(`${file}:${line}: ${target}: no such heading in ${doc}`);
  }
  return broken;
}

describe('links in README.md and docs/', () => {
  it('finds the documents and their links (the check below is not vacuous)', () => {
    const files = manualFiles();
    expect(files).toContain('README.md');
    expect(files.some((f) => f.startsWith('docs/'))).toBe(true);
    expect(files.flatMap((f) => linksOf(read(f))).length).toBeGreaterThan(5);
  });

  it('every relative link resolves to a file or directory inside the repository', () => {
    expect(manualFiles().flatMap(brokenLinks)).toEqual([]);
  });

  it('every anchor into a Markdown file names one of its headings', () => {
    expect([...anchorsOf('## GET /api/review\n### approve, deny, cancel, revoke\n## Notes\n## Notes')]).toEqual(['get-apireview', 'approve-deny-cancel-revoke', 'notes', 'notes-1']);
    expect(manualFiles().flatMap(brokenAnchors)).toEqual([]);
  });
});
