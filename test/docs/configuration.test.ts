import { describe, expect, it } from 'vitest';
import type { ZodType } from 'zod';
import { policyFileSchema } from '../../src/config/schema.js';
import { filesUnder, read } from './markdown.js';

// docs/configuration.md lists every key of policies.yaml with its default, and every environment
// variable the gateway reads. Both lists are taken from the code, so a key or a variable added
// without its documentation fails here.
interface Key {
  path: string;
  default?: unknown;
}

type Def = { type: string; innerType?: ZodType; in?: ZodType; shape?: Record<string, ZodType>; element?: ZodType; valueType?: ZodType; defaultValue?: unknown };
const defOf = (s: ZodType): Def => (s as unknown as { _zod: { def: Def } })._zod.def;

/** Every key of the schema as a path (`settings.mode`, `policies[].task`, `groups.<name>`), with its default. */
function keysOf(schema: ZodType, path = '', out: Key[] = []): Key[] {
  const def = defOf(schema);
  // An array's elements are documented with the array (`policies`), their keys as `policies[].id`.
  const here = (): Key => {
    let key = out.find((k) => k.path === path);
    if (!key) out.push((key = { path }));
    return key;
  };
  switch (def.type) {
    case 'optional':
    case 'nullable':
    case 'readonly':
      return keysOf(def.innerType!, path, out);
    case 'default':
    case 'prefault': {
      const value = typeof def.defaultValue === 'function' ? (def.defaultValue as () => unknown)() : def.defaultValue;
      if (path && !path.endsWith('[]')) here().default = value;
      return keysOf(def.innerType!, path, out);
    }
    case 'pipe':
      return keysOf(def.in!, path, out);
    case 'object':
      if (path && !path.endsWith('[]')) here();
      for (const [name, value] of Object.entries(def.shape!)) keysOf(value, path ? `${path}.${name}` : name, out);
      return out;
    case 'array':
      if (path && !path.endsWith('[]')) here();
      return keysOf(def.element!, `${path}[]`, out);
    case 'record':
      if (path && !path.endsWith('[]')) here();
      return keysOf(def.valueType!, `${path}.<name>`, out);
    default:
      if (path && !path.endsWith('[]')) here();
      return out;
  }
}

/** A default as the documentation writes it in YAML: `1048576`, `enforce`, `[5, 30, 120]`; objects are not written. */
function yamlOf(value: unknown): string | null {
  if (Array.isArray(value)) return `[${value.map((v) => yamlOf(v)).join(', ')}]`;
  if (value !== null && typeof value === 'object') return null;
  return String(value);
}

/** Table rows of the document keyed by the code span in their first cell. */
function rows(markdown: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of markdown.split('\n')) {
    const m = /^\|\s*`([^`]+)`/.exec(line);
    if (m) out.set(m[1]!, line);
  }
  return out;
}

function environmentVariables(): string[] {
  const names = new Set<string>();
  for (const file of filesUnder('src').filter((f) => f.endsWith('.ts'))) {
    for (const m of read(file).matchAll(/env\[['"]([A-Z][A-Z0-9_]*)['"]\]/g)) names.add(m[1]!);
  }
  return [...names].sort();
}

describe('docs/configuration.md', () => {
  it('has a row for every key of policies.yaml, with its default', () => {
    const documented = rows(read('docs/configuration.md'));
    const keys = keysOf(policyFileSchema);
    expect(keys.map((k) => k.path)).toEqual(expect.arrayContaining(['settings.mode', 'policies[].requireMfa', 'identity.jwt.userClaimFallback']));
    const missing: string[] = [];
    for (const key of keys) {
      const row = documented.get(key.path);
      if (row === undefined) {
        missing.push(`${key.path}: no row`);
        continue;
      }
      const written = key.default === undefined ? null : yamlOf(key.default);
      if (written !== null && !row.includes(`\`${written}\``)) missing.push(`${key.path}: default \`${written}\` not in its row`);
    }
    expect(missing).toEqual([]);
  });

  it('has a row for every environment variable the gateway reads', () => {
    const documented = rows(read('docs/configuration.md'));
    const variables = environmentVariables();
    expect(variables).toEqual(expect.arrayContaining(['PORT', 'PAMGATE_STORE', 'PAMGATE_TOKEN']));
    expect(variables.filter((v) => !documented.has(v))).toEqual([]);
  });
});
