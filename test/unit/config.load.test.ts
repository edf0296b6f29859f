import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { formatConfigError, parsePolicyText } from '../../src/config/load.js';

const base = `version: 1
settings:
  defaultApproverGroup: approvers
groups:
  approvers: [alice@contoso.com]
policies:
  - id: journal-rules
    task: New-JournalRule
`;

describe('policy file loading', () => {
  it('accepts a valid file and fills defaults', () => {
    const r = parsePolicyText(base, 'p.yaml', {});
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.config.settings).toMatchObject({ enabled: true, mode: 'enforce', defaultDurationHours: 4, maxDurationHours: 24, pendingExpiryHours: 24 });
    expect(r.config.policies[0]).toMatchObject({ approval: 'manual', approvals: 1, requireReason: true, requireMfa: false });
  });

  it('reports YAML syntax errors with line and column', () => {
    const r = parsePolicyText('version: 1\npolicies: [\n', 'bad.yaml', {});
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(formatConfigError(r.errors[0]!)).toMatch(/^bad\.yaml:\d+:\d+: /);
  });

  it('reports every schema error at the offending line:col', () => {
    const text = `version: 1
settings:
  mode: enforcing
groups:
  approvers: [alice@contoso.com]
policies:
  - id: Bad_Id
    task: New-JournalRule
  - id: ok
    task: Set-JournalRule
    approvals: zero
`;
    const r = parsePolicyText(text, 'p.yaml', {});
    expect(r.ok).toBe(false);
    if (r.ok) return;
    const lines = r.errors.map(formatConfigError);
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/^p\.yaml:3:9: settings\.mode: /);
    expect(lines.some((l) => /^p\.yaml:7:9: policies\[0\]\.id: id must match/.test(l))).toBe(true);
    expect(lines.some((l) => /^p\.yaml:11:16: policies\[1\]\.approvals: /.test(l))).toBe(true);
  });

  it('rejects unknown keys (a typo must not silently weaken a policy)', () => {
    const r = parsePolicyText(base + '    requireMFA: true\n', 'p.yaml', {});
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(formatConfigError(r.errors[0]!)).toContain('requireMFA');
  });

  it('checks references, uniqueness and regexes', () => {
    const text = `version: 1
groups:
  approvers: [alice@contoso.com]
roles:
  R: [Set-Thing]
policies:
  - id: a
    task: New-Thing
    approverGroup: nobody
  - id: a
    role: Missing
    approverGroup: approvers
  - id: c
    task: Add-Thing
    approverGroup: approvers
    approvals: 2
    parameters:
      Identity: { pattern: '([' }
`;
    const r = parsePolicyText(text, 'p.yaml', {});
    expect(r.ok).toBe(false);
    if (r.ok) return;
    const msgs = r.errors.map(formatConfigError).join('\n');
    expect(msgs).toMatch(/p\.yaml:9:\d+: .*unknown group "nobody"/);
    expect(msgs).toMatch(/p\.yaml:10:\d+: .*duplicate policy id "a"/);
    expect(msgs).toMatch(/p\.yaml:11:\d+: .*unknown role "Missing"/);
    expect(msgs).toMatch(/p\.yaml:16:\d+: .*needs 2 approvers but group "approvers" has 1/);
    expect(msgs).toMatch(/p\.yaml:18:\d+: .*invalid pattern/);
  });

  it('two policies for the same task (any spelling) or role are an error; group names are not object keys', () => {
    const text = `version: 1
groups:
  approvers: [alice@contoso.com]
roles:
  R: [Set-Thing]
policies:
  - id: a
    task: New-Thing
    approverGroup: approvers
  - id: b
    task: NEW-THING
    approverGroup: approvers
  - id: c
    role: R
    approverGroup: approvers
  - id: d
    role: R
    approverGroup: constructor
`;
    const r = parsePolicyText(text, 'p.yaml', {});
    expect(r.ok).toBe(false);
    if (r.ok) return;
    const msgs = r.errors.map(formatConfigError).join('\n');
    expect(msgs).toMatch(/p\.yaml:11:11: policies\[1\]\.task: policy "a" already covers task new-thing/);
    expect(msgs).toMatch(/p\.yaml:17:11: policies\[3\]\.role: policy "c" already covers role R/);
    expect(msgs).toMatch(/unknown group "constructor"/);
  });

  it('needs exactly one of task or role', () => {
    const r = parsePolicyText(base.replace('    task: New-JournalRule\n', '    task: A\n    role: B\n'), 'p.yaml', {});
    expect(r.ok).toBe(false);
  });

  it('interpolates ${ENV} and reports unset variables where they are used', () => {
    const text = base + 'identity:\n  jwt:\n    secret: ${SECRET_X}\n';
    const ok = parsePolicyText(text, 'p.yaml', { SECRET_X: 'a-very-long-secret-value' });
    expect(ok.ok && ok.config.identity?.jwt.secret).toBe('a-very-long-secret-value');
    const bad = parsePolicyText(text, 'p.yaml', {});
    expect(bad.ok).toBe(false);
    if (bad.ok) return;
    expect(bad.errors.map(formatConfigError)).toEqual(['p.yaml:11:13: environment variable SECRET_X is not set']);
  });

  it('checks identity.jwt.jwksFile at load, relative to the policy file, naming its line', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pamgate-jwks-'));
    const withJwks = (file: string) => base + `identity:\n  jwt:\n    jwksFile: ${file}\n`;
    writeFileSync(join(dir, 'good.json'), JSON.stringify({ keys: [{ kty: 'EC', crv: 'P-256', x: 'x', y: 'y' }] }));
    writeFileSync(join(dir, 'private.json'), JSON.stringify({ keys: [{ kty: 'EC', crv: 'P-256', x: 'x', y: 'y', d: 'secret' }] }));
    writeFileSync(join(dir, 'junk.json'), 'not json');
    const good = parsePolicyText(withJwks('good.json'), join(dir, 'p.yaml'), {});
    expect(good.ok && good.config.identity?.jwt.jwksFile).toBe(join(dir, 'good.json'));
    for (const [file, message] of [['missing.json', /cannot read/], ['junk.json', /cannot read .* as JSON/], ['private.json', /.*holds a private key/]] as const) {
      const r = parsePolicyText(withJwks(file), join(dir, 'p.yaml'), {});
      expect(r.ok).toBe(false);
      if (!r.ok) expect(formatConfigError(r.errors[0]!)).toMatch(new RegExp(`p\\.yaml:11:15: identity\\.jwt\\.jwksFile: ${message.source}`));
    }
  });

  it('rejects duplicate YAML keys', () => {
    const r = parsePolicyText(base + 'policies: []\n', 'p.yaml', {});
    expect(r.ok).toBe(false);
  });
});
