import { describe, expect, it } from 'vitest';
import { filesUnder, read } from './markdown.js';

// The tree describes the product as it is; how it got there is in `git log`. A numbered work
// session or round of changes in the docs, the bench, the Dockerfile or the source is narration.
const NARRATION = /sessions? [0-9]|(first|second|third|[a-z]+th) round/i;
const PATHS = ['README.md', 'docs', 'bench', 'Dockerfile', 'src'];
// Bench output is git-ignored and written by runs, not part of the tree.
const SKIP = new Set(['bench/out']);

function narration(file: string): string[] {
  return read(file)
    .split('\n')
    .flatMap((text, i) => (NARRATION.test(text) ? [`${file}:${i + 1}: ${text.trim().slice(0, 160)}`] : []));
}

describe('no development diary in the tree', () => {
  it('the pattern finds what it is meant to find', () => {
    for (const s of ['session 10: no full GC', 'sessions 10 and 11', 'bench/RESULTS.md, eighth round', 'Fourth round of changes', 'the first round'])
      expect(NARRATION.test(s), s).toBe(true);
    for (const s of ['pamgate_session cookie', 'sessionStorage', 'each round', '10 rounds × 3 s']) expect(NARRATION.test(s), s).toBe(false);
  });

  it('README.md, docs/, bench/, Dockerfile and src/ name no numbered session or round', () => {
    const files = PATHS.flatMap((p) => filesUnder(p, SKIP));
    expect(files.length).toBeGreaterThan(20);
    expect(files.flatMap(narration)).toEqual([]);
  });
});
