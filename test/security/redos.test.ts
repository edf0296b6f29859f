import { fileURLToPath } from 'node:url';
import { check } from 'recheck';
import { describe, expect, it } from 'vitest';
import { findRegexes } from './regex-inventory.js';

/**
 * Every regular expression in src/ goes through a ReDoS analyser (recheck: its native binary
 * when installed, else its pure-JS engine). Any it finds super-linear, or cannot decide, fails
 * the suite with its file:line. A pattern built at run time cannot be analysed here: each one
 * must be listed below with what keeps it off attacker input or bounded.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** Run-time patterns, by file, and why each is acceptable. */
const COMPUTED_PATTERNS: Record<string, string> = {
  // Operator-written `pattern` rules of a policy: checked for syntax at load, run only on the
  // parameters of a call that a grant-holder makes to the task the policy gates.
  'src/config/load.ts': 'policy parameter pattern, compiled once to report a syntax error',
  'src/policy/params.ts': 'policy parameter pattern (operator-written), see docs/linear-matching.md',
};

describe('ReDoS analysis of every regular expression in src/', () => {
  const found = findRegexes(ROOT);

  it('finds the regular expressions (literals and RegExp constructions)', () => {
    expect(found.length).toBeGreaterThan(40);
    expect(found.some((r) => r.where.startsWith('src/classify/'))).toBe(true);
  });

  it('no pattern is super-linear', { timeout: 120_000 }, async () => {
    const flagged: string[] = [];
    for (const r of found) {
      if (r.source === null) continue;
      const diagnostics = await check(r.source, r.flags, { timeout: 20_000 });
      if (diagnostics.status === 'safe') continue;
      const detail =
        diagnostics.status === 'vulnerable'
          ? `${diagnostics.complexity.type}, attack ${diagnostics.attack.pattern.slice(0, 80)}`
          : `could not be decided (${diagnostics.error.kind})`;
      flagged.push(`${r.where}: /${r.source}/${r.flags} is ${diagnostics.status}: ${detail}`);
    }
    expect(flagged, flagged.join('\n')).toEqual([]);
  });

  it('every pattern built at run time is accounted for', () => {
    const computed = found.filter((r) => r.source === null);
    const unexplained = computed.filter((r) => COMPUTED_PATTERNS[r.where.replace(/:\d+$/, '')] === undefined);
    expect(unexplained.map((r) => `${r.where}: RegExp(${r.text})`), 'a RegExp built from a run-time value cannot be analysed').toEqual([]);
  });
});
