import { describe, expect, it } from 'vitest';
import { formatConfigError, parsePolicyText } from '../../src/config/load.js';
import { PolicySet } from '../../src/policy/compile.js';
import { contains, globSymbols, intersection } from '../../src/policy/overlap.js';

const g = globSymbols;

describe('glob languages', () => {
  it('intersection finds a task both match, or none', () => {
    expect(intersection(g('Set-*'), g('*-TransportRule'))).toBe('set-transportrule');
    expect(intersection(g('Remove-*'), g('Set-*'))).toBeNull();
    expect(intersection(g('*-Mailbox'), g('*-MailboxPermission'))).toBeNull();
    expect(intersection(g('*Mailbox*'), g('*Permission'))).toBe('mailboxpermission');
    expect(intersection(g('Set-?'), g('Set-??'))).toBeNull();
    expect(intersection(g('Set-?*'), g('Set-'))).toBeNull();
    expect(intersection(g('a*b*c'), g('*c*b*a'))).toBeNull();
    expect(intersection(g('Exchange\\New-*'), g('new-journal?ule'))).toBe('new-journalxule');
    expect(intersection(g('*'), g('?'))).toBe('x');
  });

  it('contains tells a glob strictly inside another', () => {
    expect(contains(g('Set-*'), g('Set-Transport*'))).toBe(true);
    expect(contains(g('Set-Transport*'), g('Set-*'))).toBe(false);
    expect(contains(g('*'), g('Set-?ailbox'))).toBe(true);
    expect(contains(g('Set-?ailbox'), g('Set-Mailbox'))).toBe(true);
    expect(contains(g('Set-?ailbox'), g('Set-*ailbox'))).toBe(false);
    expect(contains(g('?*'), g('*?'))).toBe(true); // the same language, written two ways
    expect(contains(g('*-TransportRule'), g('Set-*'))).toBe(false);
  });

  it('stays fast on long patterns full of stars', () => {
    const a = g('*a'.repeat(200) + '*');
    const b = g('*b'.repeat(200) + '*');
    const started = performance.now();
    expect(intersection(a, b)).not.toBeNull();
    expect(contains(a, b)).toBe(false);
    expect(performance.now() - started).toBeLessThan(500);
  });
});

const file = (policies: string, roles = ''): string => `version: 1
settings:
  defaultApproverGroup: approvers
groups:
  approvers: [alice@contoso.com, bob@contoso.com]
  strict: [carol@contoso.com, dave@contoso.com]
${roles}policies:
${policies}`;

const SET_ANY_THEN_TRANSPORT = file(`  - id: set-any
    task: Set-*
    approval: auto
  - id: transport-rules
    task: '*-TransportRule'
    approverGroup: strict
    approvals: 2
    requireTicket: true
`);

describe('policies of the same precedence covering one task', () => {
  it('two overlapping globs, neither inside the other: a load error at the later one naming both', () => {
    const r = parsePolicyText(SET_ANY_THEN_TRANSPORT, 'p.yaml', {});
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.errors.map(formatConfigError)).toEqual([
      'p.yaml:12:11: policies[1].task: policy "transport-rules" (task *-TransportRule) and policy "set-any" (task Set-*) both match tasks such as set-transportrule, and neither pattern contains the other: which one governs would depend on file order; narrow one of them until the two no longer meet or one lies inside the other',
    ]);
  });

  it('globs that match the same tasks written differently are an error', () => {
    const r = parsePolicyText(file(`  - id: a
    task: 'Set-?*'
  - id: b
    task: 'Set-*?'
`), 'p.yaml', {});
    expect(r.ok ? [] : r.errors.map(formatConfigError)).toEqual([
      'p.yaml:11:11: policies[1].task: policy "b" (task Set-*?) matches exactly the tasks policy "a" (task Set-?*) matches: which one governs would depend on file order',
    ]);
  });

  it('a task in two roles with a policy each is an error, unless a task policy of its own governs it', () => {
    const roles = `roles:
  Transport: [Set-TransportRule, New-TransportRule]
  Rules: [Set-TransportRule, New-InboxRule]
`;
    const two = parsePolicyText(file(`  - id: transport
    role: Transport
  - id: rules
    role: Rules
    approval: auto
`, roles), 'p.yaml', {});
    expect(two.ok ? [] : two.errors.map(formatConfigError)).toEqual([
      expect.stringMatching(/^p\.yaml:14:11: policies\[1\]\.role: policy "rules" \(role Rules\) and policy "transport" \(role Transport\) both cover task set-transportrule/),
    ]);
    const own = parsePolicyText(file(`  - id: transport
    role: Transport
  - id: rules
    role: Rules
    approval: auto
  - id: set-transport-rule
    task: Set-TransportRule
`, roles), 'p.yaml', {});
    expect(own.ok).toBe(true);
  });

  it('disjoint globs load; nested ones load with the narrower governing, and lint warns at the broader', () => {
    expect(parsePolicyText(file(`  - id: removals
    task: Remove-*
  - id: sets
    task: Set-*
  - id: mailboxes
    task: '*-Mailbox'
`), 'p.yaml', {})).toMatchObject({ ok: false }); // Remove-Mailbox: Remove-* and *-Mailbox overlap
    const nested = parsePolicyText(file(`  - id: set-any
    task: Set-*
    approval: auto
  - id: set-transport
    task: Set-Transport*
    approverGroup: strict
    approvals: 2
  - id: set-mailbox
    task: Set-Mailbox
`), 'p.yaml', {}, { lint: true });
    expect(nested.ok).toBe(true);
    if (!nested.ok) return;
    expect(nested.warnings.map(formatConfigError)).toEqual([
      'p.yaml:9:11: warning: policies[0].task: policy "set-any" (task Set-*) is broader than policy "set-transport" (task Set-Transport*), which governs the tasks both match',
      'p.yaml:9:11: warning: policies[0].task: policy "set-any" (task Set-*) also matches task set-mailbox, which policy "set-mailbox" (task Set-Mailbox) governs (a task policy wins over a glob)',
    ]);
    const set = new PolicySet(nested.config);
    expect(set.policyForTask('Set-TransportRule')?.id).toBe('set-transport');
    expect(set.policiesFor('set-transportconfig')?.map((p) => p.id)).toEqual(['set-transport']);
    expect(set.policyForTask('Set-User')?.id).toBe('set-any');
    expect(set.policyForTask('Set-Mailbox')?.id).toBe('set-mailbox');
  });

  it('the same glob twice is reported once, as the duplicate it is', () => {
    const r = parsePolicyText(file(`  - id: a
    task: Set-*
  - id: b
    task: set-*
`), 'p.yaml', {});
    expect(r.ok ? [] : r.errors.map((e) => e.message)).toEqual(['policies[1].task: policy "a" already covers task set-*']);
  });
});
