import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { Document, isMap, isNode, isPair, isScalar, isSeq, LineCounter, parseDocument, visit } from 'yaml';
import { taskKey } from '../policy/names.js';
import { precedenceFindings } from '../policy/precedence.js';
import { policyFileSchema, type PolicyFile } from './schema.js';

/** One problem in a policy file, located for `file:line:col: message` output. */
export interface ConfigError {
  file: string;
  line: number;
  col: number;
  message: string;
}

/** `warnings`: lint findings that do not stop a load (only computed with `lint`). */
export type LoadResult = { ok: true; config: PolicyFile; warnings: ConfigError[] } | { ok: false; errors: ConfigError[] };

export interface LoadOptions {
  /** Also compute the warnings `pamgate check` prints. */
  lint?: boolean;
}

export function formatConfigError(e: ConfigError): string {
  return `${e.file}:${e.line}:${e.col}: ${e.message}`;
}

export async function loadPolicyFile(file: string, env: NodeJS.ProcessEnv = process.env, opts: LoadOptions = {}): Promise<LoadResult> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    return { ok: false, errors: [{ file, line: 1, col: 1, message: `cannot read file: ${(err as Error).message}` }] };
  }
  return parsePolicyText(text, file, env, opts);
}

export function parsePolicyText(text: string, file: string, env: NodeJS.ProcessEnv = process.env, opts: LoadOptions = {}): LoadResult {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number | undefined, message: string): ConfigError => {
    const pos = lines.linePos(offset ?? 0);
    return { file, line: pos.line, col: pos.col, message };
  };

  if (doc.errors.length > 0) {
    return { ok: false, errors: doc.errors.map((e) => at(e.pos[0], e.message.split('\n')[0] ?? e.message)) };
  }

  const envErrors = interpolateEnv(doc, env);
  const errors: ConfigError[] = envErrors.map((e) => at(e.offset, e.message));
  const warnings: ConfigError[] = [];
  const parsed = policyFileSchema.safeParse(doc.toJS());
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      const offset = offsetOf(doc, issue.path);
      // A value left uninterpolated is already reported as its unset variable.
      if (envErrors.some((e) => e.offset === offset)) continue;
      errors.push(at(offset, `${pathText(issue.path)}: ${issue.message}`));
    }
  } else {
    for (const e of crossCheck(parsed.data)) errors.push(at(offsetOf(doc, e.path), `${pathText(e.path)}: ${e.message}`));
    const precedence = precedenceFindings(parsed.data.policies, parsed.data.roles, opts.lint === true);
    const located = (f: { at: number; field: string; message: string }, kind: string): ConfigError => {
      const path = ['policies', f.at, f.field];
      return at(offsetOf(doc, path), `${kind}${pathText(path)}: ${f.message}`);
    };
    for (const f of precedence.errors) errors.push(located(f, ''));
    warnings.push(...precedence.warnings.map((f) => located(f, 'warning: ')));
    const jwt = parsed.data.identity?.jwt;
    if (jwt?.jwksFile !== undefined) {
      // Relative to the policy file, so the gateway reads the same file wherever it is started.
      jwt.jwksFile = resolve(dirname(file), jwt.jwksFile);
      const problem = jwksFileProblem(jwt.jwksFile);
      if (problem !== null) errors.push(at(offsetOf(doc, ['identity', 'jwt', 'jwksFile']), `identity.jwt.jwksFile: ${problem}`));
    }
  }
  if (errors.length > 0) return { ok: false, errors };
  if (!parsed.success) throw new Error('unreachable');
  return { ok: true, config: parsed.data, warnings };
}

/** Replaces `${NAME}` in every scalar string; an unset variable is an error at that scalar. */
function interpolateEnv(doc: Document, env: NodeJS.ProcessEnv): { offset: number | undefined; message: string }[] {
  const errors: { offset: number | undefined; message: string }[] = [];
  visit(doc, {
    Scalar(_key, node) {
      if (typeof node.value !== 'string' || !node.value.includes('${')) return;
      node.value = node.value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_m, name: string) => {
        const value = env[name];
        if (value === undefined) {
          errors.push({ offset: node.range?.[0], message: `environment variable ${name} is not set` });
          return _m;
        }
        return value;
      });
    },
  });
  return errors;
}

/** Rules that span several parts of the file (references, uniqueness, regex syntax). */
function crossCheck(cfg: PolicyFile): { path: PropertyKey[]; message: string }[] {
  const problems: { path: PropertyKey[]; message: string }[] = [];
  const groups = cfg.groups;
  const seen = new Set<string>();
  for (const name of ['defaultApproverGroup', 'adminGroup'] as const) {
    const group = cfg.settings[name];
    if (group !== undefined && !Object.hasOwn(groups, group)) {
      problems.push({ path: ['settings', name], message: `unknown group "${group}"` });
    }
  }
  if (cfg.settings.defaultDurationHours > cfg.settings.maxDurationHours) {
    problems.push({ path: ['settings', 'defaultDurationHours'], message: 'must not exceed maxDurationHours' });
  }
  const targets = new Map<string, string>();
  cfg.policies.forEach((p, i) => {
    if (seen.has(p.id)) problems.push({ path: ['policies', i, 'id'], message: `duplicate policy id "${p.id}"` });
    seen.add(p.id);
    // Two policies for the same task or role would make which one governs a matter of file order.
    const target = p.task !== undefined ? `task ${taskKey(p.task)}` : `role ${p.role}`;
    const other = targets.get(target);
    if (other !== undefined) problems.push({ path: ['policies', i, p.task !== undefined ? 'task' : 'role'], message: `policy "${other}" already covers ${target}` });
    else targets.set(target, p.id);
    if (p.role !== undefined && !Object.hasOwn(cfg.roles, p.role)) {
      problems.push({ path: ['policies', i, 'role'], message: `unknown role "${p.role}"` });
    }
    const group = p.approverGroup ?? cfg.settings.defaultApproverGroup;
    if (p.approval === 'manual') {
      if (group === undefined) {
        problems.push({ path: ['policies', i], message: 'manual policy needs approverGroup (or settings.defaultApproverGroup)' });
      } else if (!Object.hasOwn(groups, group)) {
        problems.push({ path: ['policies', i, 'approverGroup'], message: `unknown group "${group}"` });
      } else if ((groups[group]?.length ?? 0) < p.approvals) {
        problems.push({ path: ['policies', i, 'approvals'], message: `needs ${p.approvals} approvers but group "${group}" has ${groups[group]?.length ?? 0}` });
      }
    }
    for (const [param, rule] of Object.entries(p.parameters ?? {})) {
      if (rule.pattern === undefined) continue;
      try {
        new RegExp(rule.pattern, 'u');
      } catch (err) {
        problems.push({ path: ['policies', i, 'parameters', param, 'pattern'], message: `invalid pattern: ${(err as Error).message}` });
      }
    }
  });
  return problems;
}

/** Why a JWKS file cannot serve as the token key set, or null if it can. */
function jwksFileProblem(path: string): string | null {
  let set: unknown;
  try {
    set = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    return `cannot read ${path} as JSON: ${(err as Error).message}`;
  }
  const keys = (set as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys) || keys.length === 0) return `${path} is not a JWKS (no "keys" array)`;
  if (keys.some((k) => typeof (k as { kty?: unknown } | null)?.kty !== 'string')) return `${path}: every key needs a "kty"`;
  if (keys.some((k) => 'd' in (k as object))) return `${path} holds a private key; give the gateway public keys only`;
  return null;
}

/** Finds the source offset of the deepest existing node along a zod issue path. */
function offsetOf(doc: Document, path: readonly PropertyKey[]): number | undefined {
  let node: unknown = doc.contents;
  let offset = isNode(node) ? node.range?.[0] : undefined;
  for (const key of path) {
    if (isMap(node)) {
      const pair = node.items.find((it) => isPair(it) && isScalar(it.key) && it.key.value === key);
      if (!pair) break;
      node = pair.value;
      offset = isNode(pair.value) ? pair.value.range?.[0] : isNode(pair.key) ? pair.key.range?.[0] : offset;
    } else if (isSeq(node) && typeof key === 'number') {
      node = node.items[key];
      if (!isNode(node)) break;
      offset = node.range?.[0];
    } else break;
  }
  return offset;
}

function pathText(path: readonly PropertyKey[]): string {
  return path.length === 0 ? '(top level)' : path.map((p) => (typeof p === 'number' ? `[${p}]` : String(p))).join('.').replace(/\.\[/g, '[');
}
