import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { unescapeUnicode } from '../../src/classify/unescape.js';
import { compileGlob, taskKey } from '../../src/policy/names.js';

/**
 * The hand-written matchers read exactly what the backtracking regular expressions they stand
 * for read. The regexes below are the reference (on short strings, where their cost does not matter).
 */

function referenceUnescape(s: string): string | null {
  const next = s.replace(/\\+u([0-9a-fA-F]{4})/g, (_m, hex: string) => String.fromCharCode(parseInt(hex, 16)));
  return next === s ? null : next;
}

function referenceGlob(glob: string): RegExp {
  const key = taskKey(glob.replace(/\*/g, '\u0001').replace(/\?/g, '\u0002'));
  const body = key
    .split('')
    .map((c) => (c === '\u0001' ? '.*' : c === '\u0002' ? '.' : c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
    .join('');
  return new RegExp(`^${body}$`, 's');
}

const text = (alphabet: string[], maxLength: number) => fc.array(fc.constantFrom(...alphabet), { maxLength }).map((cs) => cs.join(''));

describe('unescapeUnicode', () => {
  it('examples', () => {
    expect(unescapeUnicode('\\u0043mdlet')).toBe('Cmdlet');
    expect(unescapeUnicode('\\\\\\\\u0043')).toBe('C');
    expect(unescapeUnicode('a\\\\\\u00')).toBeNull();
    expect(unescapeUnicode('\\u004G')).toBeNull();
    expect(unescapeUnicode('\\u005c\\u0075')).toBe('\\u');
    expect(unescapeUnicode('\u0010\\u\u0010\u0010\u0010\u0010')).toBeNull(); // control characters are not hex digits
  });

  it('agrees with /\\\\+u([0-9a-fA-F]{4})/g on 20,000 strings', () => {
    fc.assert(
      fc.property(text(['\\', '\\', '\\', 'u', 'U', '0', '4', '3', 'a', 'F', 'g', 'x', '\u0010', '\u00e9'], 40), (s) => {
        expect(unescapeUnicode(s)).toBe(referenceUnescape(s));
      }),
      { numRuns: 20_000 },
    );
  });
});

describe('compileGlob', () => {
  it('agrees with the anchored regex a glob used to compile to, on 20,000 (glob, key) pairs', () => {
    fc.assert(
      fc.property(text(['a', 'b', '-', '*', '*', '?', 'A', 'x\\'], 10), text(['a', 'b', '-', 'ab', '-a'], 12), (glob, key) => {
        expect(compileGlob(glob).test(key), `${glob} ~ ${key}`).toBe(referenceGlob(glob).test(key));
      }),
      { numRuns: 20_000 },
    );
  });

  it('examples with several stars', () => {
    const g = compileGlob('*-*Permission');
    expect(g.test('add-mailboxpermission')).toBe(true);
    expect(g.test('-permission')).toBe(true);
    expect(g.test('addmailboxpermission')).toBe(false);
    expect(g.test('a-permissio')).toBe(false);
    expect(compileGlob('a*b*a').test('aba')).toBe(true);
    expect(compileGlob('a*b*a').test('ab')).toBe(false);
    expect(compileGlob('a*a').test('a')).toBe(false);
    expect(compileGlob('?*?').test('ab')).toBe(true);
    expect(compileGlob('*?b?*').test('xbyb')).toBe(true);
    expect(compileGlob('Exchange\\Remove-*').test('remove-mailbox')).toBe(true);
  });

  it('a long key against a glob with many stars is read in linear time', () => {
    const key = 'a-'.repeat(200_000) + 'a';
    const started = performance.now();
    for (const glob of ['*-*Permission', '*a*a*a*a*-x', '*?-?*?-?*z']) expect(compileGlob(glob).test(key)).toBe(false);
    expect(performance.now() - started).toBeLessThan(500);
  });
});
