import type { ParameterRule } from '../config/schema.js';

/** Call parameters with case-folded names (the classifier guarantees no two fold alike). */
export type CallParams = ReadonlyMap<string, unknown>;

export interface CompiledParamRule {
  name: string; // case-folded
  oneOf: Set<string> | null; // case-folded values
  pattern: RegExp | null;
}

export function compileParamRules(rules: Record<string, ParameterRule> | undefined): CompiledParamRule[] {
  return Object.entries(rules ?? {}).map(([name, rule]) => ({
    name: name.toLowerCase(),
    oneOf: rule.oneOf ? new Set(rule.oneOf.map((v) => String(v).toLowerCase())) : null,
    pattern: rule.pattern !== undefined ? new RegExp(rule.pattern, 'u') : null,
  }));
}

/**
 * Whether a call stays inside a policy's parameter rules and a grant's requested scope.
 * Fails closed: a constrained parameter that is missing, non-scalar, or shadowed by an
 * abbreviation PowerShell could bind to it does not match.
 */
export function paramsAllowed(
  rules: readonly CompiledParamRule[],
  scope: Readonly<Record<string, string>> | null,
  params: CallParams,
): boolean {
  if ((rules.length > 0 || scope !== null) && !allNamesPlain(params)) return false;
  for (const rule of rules) {
    if (!valueMatches(params, rule.name, (v) => scalarMatchesRule(v, rule))) return false;
  }
  if (scope) {
    for (const name in scope) {
      const want = (scope[name] ?? '').toLowerCase();
      if (!valueMatches(params, name.toLowerCase(), (v) => v.toLowerCase() === want)) return false;
    }
  }
  return true;
}

const PLAIN_NAME = /^[a-z0-9_]+$/;

/** A name PowerShell might bind in a way we cannot predict (odd characters) could shadow a constrained one. */
function allNamesPlain(params: CallParams): boolean {
  for (const key of params.keys()) if (!PLAIN_NAME.test(key)) return false;
  return true;
}

function valueMatches(params: CallParams, name: string, test: (value: string) => boolean): boolean {
  if (hasAbbreviationOf(params, name)) return false;
  const value = params.get(name);
  if (Array.isArray(value)) return value.length > 0 && value.every((v) => isScalar(v) && test(String(v)));
  return isScalar(value) && test(String(value));
}

function scalarMatchesRule(value: string, rule: CompiledParamRule): boolean {
  if (rule.oneOf && !rule.oneOf.has(value.toLowerCase())) return false;
  if (rule.pattern && !rule.pattern.test(value)) return false;
  return true;
}

function isScalar(v: unknown): v is string | number | boolean {
  return typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean';
}

/** PowerShell binds a unique prefix of a parameter name to it: `-Acc` means `-AccessRights`. */
function hasAbbreviationOf(params: CallParams, name: string): boolean {
  for (const key of params.keys()) {
    if (key !== name && key.length < name.length && name.startsWith(key)) return true;
  }
  return false;
}
