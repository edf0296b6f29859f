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
});
