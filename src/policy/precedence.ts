import type { PolicyEntry } from '../config/schema.js';
import { isGlob, taskKey } from './names.js';
import { contains, globSymbols, intersection, literalPrefix, type GlobSymbols } from './overlap.js';

/**
 * Which policy governs a task: an exact task policy, else a role policy, else the narrowest glob.
 * Two policies of the same precedence that can both govern one task would leave it to file order
 * which of them a request is filed under — the permissive one listed first would let a request
 * for a task the strict one was written for through at once. Such pairs are load errors; a glob
 * strictly inside another is not ambiguous (the narrower one governs) and is only a warning.
 */

export interface PolicyFinding {
  /** Index in `policies` of the policy the finding is reported at. */
  at: number;
  field: 'task' | 'role';
  message: string;
}

interface Glob {
  index: number;
  id: string;
  /** taskKey of the pattern as written: two equal ones are reported as a duplicate by the schema checks. */
  key: string;
  symbols: GlobSymbols;
  prefix: string;
}

function globsOf(policies: readonly PolicyEntry[]): Glob[] {
  const out: Glob[] = [];
  policies.forEach((p, index) => {
    if (p.task === undefined || !isGlob(p.task)) return;
    const symbols = globSymbols(p.task);
    out.push({ index, id: p.id, key: taskKey(p.task), symbols, prefix: literalPrefix(symbols) });
  });
  return out;
}

/**
 * Pairs of globs that can both match a task key: only pairs whose literal prefixes agree (one
 * starts with the other) can, which sorting by prefix finds without trying every pair.
 */
function* candidatePairs(globs: Glob[]): Generator<[Glob, Glob]> {
  const sorted = [...globs].sort((x, y) => (x.prefix < y.prefix ? -1 : x.prefix > y.prefix ? 1 : x.index - y.index));
  for (let i = 0; i < sorted.length; i++) {
    const g = sorted[i]!;
    // Every later prefix that starts with g's sits right after it.
    for (let k = i + 1; k < sorted.length && sorted[k]!.prefix.startsWith(g.prefix); k++) yield [g, sorted[k]!];
  }
}

/**
 * Same-precedence overlaps (errors) and globs shadowed in part by a more specific policy (warnings;
 * the glob-against-task ones, which walk every task policy, only with `lint`).
 */
export function precedenceFindings(
  policies: readonly PolicyEntry[],
  roles: Readonly<Record<string, readonly string[]>>,
  lint = false,
): { errors: PolicyFinding[]; warnings: PolicyFinding[] } {
  const errors: PolicyFinding[] = [];
  const warnings: PolicyFinding[] = [];
  const label = (i: number): string => {
    const p = policies[i]!;
    return p.task !== undefined ? `policy "${p.id}" (task ${p.task})` : `policy "${p.id}" (role ${p.role})`;
  };

  // Globs against globs.
  const globs = globsOf(policies);
  for (const [x, y] of candidatePairs(globs)) {
    const [earlier, later] = x.index < y.index ? [x, y] : [y, x];
    if (earlier.key === later.key) continue;
    const both = intersection(earlier.symbols, later.symbols);
    if (both === null) continue;
    const laterInside = contains(earlier.symbols, later.symbols);
    const earlierInside = contains(later.symbols, earlier.symbols);
    if (laterInside && earlierInside) {
      errors.push({ at: later.index, field: 'task', message: `${label(later.index)} matches exactly the tasks ${label(earlier.index)} matches: which one governs would depend on file order` });
    } else if (!laterInside && !earlierInside) {
      errors.push({
        at: later.index,
        field: 'task',
        message: `${label(later.index)} and ${label(earlier.index)} both match tasks such as ${both}, and neither pattern contains the other: which one governs would depend on file order; narrow one of them until the two no longer meet or one lies inside the other`,
      });
    } else {
      const [broad, narrow] = laterInside ? [earlier, later] : [later, earlier];
      warnings.push({ at: broad.index, field: 'task', message: `${label(broad.index)} is broader than ${label(narrow.index)}, which governs the tasks both match` });
    }
  }

  // Role policies against role policies: a task in two roles with a policy each, and no task policy of its own.
  const taskPolicy = new Map<string, number>();
  policies.forEach((p, i) => {
    if (p.task !== undefined && !isGlob(p.task)) taskPolicy.set(taskKey(p.task), i);
  });
  const rolePolicyOf = new Map<string, number>();
  const byRoleTask = new Map<string, number>();
  policies.forEach((p, i) => {
    if (p.role === undefined || rolePolicyOf.has(p.role)) return; // a second policy for one role is reported by the schema checks
    rolePolicyOf.set(p.role, i);
    const reported = new Set<number>();
    for (const task of new Set((roles[p.role] ?? []).map(taskKey))) {
      if (taskPolicy.has(task)) continue;
      const other = byRoleTask.get(task);
      if (other === undefined) byRoleTask.set(task, i);
      else if (!reported.has(other)) {
        reported.add(other);
        errors.push({ at: i, field: 'role', message: `${label(i)} and ${label(other)} both cover task ${task} (its roles share it): which one governs would depend on file order; give ${task} a task policy of its own, or keep it in one role` });
      }
    }
  });

  if (!lint) return { errors, warnings };
  // Globs that also match tasks a task or role policy governs.
  const governed = [...taskPolicy.entries(), ...byRoleTask.entries()].map(([task, i]) => ({ task, i, symbols: globSymbols(task) }));
  for (const g of globs) {
    for (const { task, i, symbols } of governed) {
      if (!task.startsWith(g.prefix) || intersection(g.symbols, symbols) === null) continue;
      warnings.push({ at: g.index, field: 'task', message: `${label(g.index)} also matches task ${task}, which ${label(i)} governs (${policies[i]!.task !== undefined ? 'a task policy' : 'a role policy'} wins over a glob)` });
    }
  }
  return { errors, warnings };
}

/**
 * Of several globs matching one task key, the one inside all the others (after a load with no
 * precedence errors, matching globs always nest); all of them when none is.
 */
export function narrowestGlob<P extends { task: string | null }>(matching: P[]): P[] {
  if (matching.length < 2) return matching;
  const symbols = matching.map((p) => globSymbols(p.task ?? ''));
  for (let i = 0; i < matching.length; i++) {
    if (symbols.every((s, k) => k === i || contains(s, symbols[i]!))) return [matching[i]!];
  }
  return matching;
}
