import { describe, expect, it } from 'vitest';
import { policyFileSchema } from '../../src/config/schema.js';
import { PolicySet } from '../../src/policy/compile.js';
import { decide, type Command, type Grant, type Identity } from '../../src/policy/decide.js';
import { taskKey } from '../../src/policy/names.js';

const NOW = Date.parse('2026-11-23T10:00:00Z');
const HOUR = 3_600_000;

function policies(extra: Record<string, unknown> = {}): PolicySet {
  return new PolicySet(
    policyFileSchema.parse({
      version: 1,
      settings: { defaultApproverGroup: 'approvers', systemAccounts: ['svc@contoso.com'], ...extra },
      groups: { approvers: ['alice@contoso.com', 'bob@contoso.com'] },
      roles: { Journaling: ['New-JournalRule', 'Set-JournalRule'] },
      policies: [
        { id: 'journal', task: 'New-JournalRule' },
        { id: 'journaling', role: 'Journaling' },
        {
          id: 'perm',
          task: 'Add-MailboxPermission',
          parameters: { AccessRights: { oneOf: ['ReadPermission'] }, Identity: { pattern: '^[^@]+@contoso\\.com$' } },
        },
        { id: 'removals', task: 'Remove-*' },
        { id: 'remove-mailbox', task: 'Remove-Mailbox' },
      ],
    }),
  );
}

const cmd = (name: string, params: Record<string, unknown> = {}): Command => ({
  name,
  key: taskKey(name),
  params: new Map(Object.entries(params).map(([k, v]) => [k.toLowerCase(), v])),
});
const eve: Identity = { user: 'eve@contoso.com', amr: [], expiresAt: null };
const mallory: Identity = { user: 'mallory@contoso.com', amr: [], expiresAt: null };
const grant = (over: Partial<Grant> = {}): Grant => ({
  requestId: 'r1',
  requester: 'eve@contoso.com',
  policyId: 'journal',
  taskKeys: new Set(['new-journalrule']),
  scope: null,
  expiresAt: NOW + HOUR,
  ...over,
});
const grantsFor = (list: Grant[]) => (user: string) => list.filter((g) => g.requester === user);

describe('decide', () => {
  const set = policies();

  it('forwards a task no policy covers, without needing an identity', () => {
    const d = decide([cmd('Get-Mailbox')], set, null, grantsFor([]), NOW);
    expect(d).toMatchObject({ action: 'forward', verdicts: [] });
  });

  it('blocks a covered task without identity with 401', () => {
    const d = decide([cmd('New-JournalRule')], set, null, grantsFor([grant()]), NOW);
    expect(d).toMatchObject({ action: 'block', status: 401 });
    expect(d.verdicts[0]).toMatchObject({ kind: 'unidentified' });
  });

  it('blocks a covered task without a grant with 403 and cites the most specific policy', () => {
    const d = decide([cmd('New-JournalRule')], set, eve, grantsFor([]), NOW);
    expect(d).toMatchObject({ action: 'block', status: 403 });
    expect(d.verdicts[0]!.policy.id).toBe('journal');
  });

  it('allows with a matching active grant', () => {
    const d = decide([cmd('new-journalrule')], set, eve, grantsFor([grant()]), NOW);
    expect(d.action).toBe('forward');
    expect(d.verdicts[0]).toMatchObject({ kind: 'granted', grant: { requestId: 'r1' } });
  });

  it('refuses an expired grant (exactly at expiry too)', () => {
    expect(decide([cmd('New-JournalRule')], set, eve, grantsFor([grant({ expiresAt: NOW })]), NOW).action).toBe('block');
    expect(decide([cmd('New-JournalRule')], set, eve, grantsFor([grant({ expiresAt: NOW - 1 })]), NOW).action).toBe('block');
  });

  it("does not let one user's grant serve another", () => {
    const d = decide([cmd('New-JournalRule')], set, mallory, () => [grant()], NOW);
    expect(d.action).toBe('block');
  });

  it('a grant for task X does not cover task Y', () => {
    const d = decide([cmd('Set-JournalRule')], set, eve, grantsFor([grant()]), NOW);
    expect(d.action).toBe('block');
  });

  it('a role grant covers the tasks of the role that the role policy governs', () => {
    const roleGrant = grant({ policyId: 'journaling', taskKeys: new Set(['set-journalrule']) });
    expect(decide([cmd('Set-JournalRule')], set, eve, grantsFor([roleGrant]), NOW).action).toBe('forward');
    expect(decide([cmd('Remove-JournalRule')], set, eve, grantsFor([roleGrant]), NOW).action).toBe('block');
  });

  it('a task policy governs its task: a role grant never overrides it, even if it lists the task', () => {
    expect(set.policiesFor('new-journalrule')!.map((p) => p.id)).toEqual(['journal']);
    const roleGrant = grant({ policyId: 'journaling', taskKeys: new Set(['new-journalrule', 'set-journalrule']) });
    expect(decide([cmd('New-JournalRule')], set, eve, grantsFor([roleGrant]), NOW)).toMatchObject({ action: 'block', status: 403 });
    expect(decide([cmd('New-JournalRule')], set, eve, grantsFor([roleGrant]), NOW).verdicts[0]!.policy.id).toBe('journal');
  });

  it('a grant under a policy that no longer covers the task does not count', () => {
    const stray = grant({ policyId: 'perm' });
    expect(decide([cmd('New-JournalRule')], set, eve, grantsFor([stray]), NOW).action).toBe('block');
  });

  describe('parameter-scoped policies', () => {
    const permGrant = grant({ policyId: 'perm', taskKeys: new Set(['add-mailboxpermission']) });
    const run = (params: Record<string, unknown>, g = permGrant) => decide([cmd('Add-MailboxPermission', params)], set, eve, grantsFor([g]), NOW).action;

    it('allows calls inside the rules, values case-insensitive for oneOf', () => {
      expect(run({ Identity: 'bob@contoso.com', AccessRights: 'ReadPermission' })).toBe('forward');
      expect(run({ identity: 'bob@contoso.com', accessrights: 'readpermission' })).toBe('forward');
      expect(run({ Identity: 'bob@contoso.com', AccessRights: ['ReadPermission'] })).toBe('forward');
    });
    it('blocks calls outside the rules', () => {
      expect(run({ Identity: 'bob@contoso.com', AccessRights: 'FullAccess' })).toBe('block');
      expect(run({ Identity: 'bob@fabrikam.com', AccessRights: 'ReadPermission' })).toBe('block');
      expect(run({ Identity: 'bob@contoso.com', AccessRights: ['ReadPermission', 'FullAccess'] })).toBe('block');
      expect(run({ Identity: 'bob@contoso.com', AccessRights: [] })).toBe('block');
    });
    it('fails closed on missing, non-scalar or abbreviated constrained parameters', () => {
      expect(run({ Identity: 'bob@contoso.com' })).toBe('block');
      expect(run({ Identity: 'bob@contoso.com', AccessRights: { x: 'ReadPermission' } })).toBe('block');
      expect(run({ Identity: 'bob@contoso.com', AccessRights: 'ReadPermission', Access: 'FullAccess' })).toBe('block');
    });
    it('honours the scope the requester asked for', () => {
      const scoped = grant({ policyId: 'perm', taskKeys: new Set(['add-mailboxpermission']), scope: { identity: 'bob@contoso.com' } });
      expect(run({ Identity: 'BOB@contoso.com', AccessRights: 'ReadPermission' }, scoped)).toBe('forward');
      expect(run({ Identity: 'carl@contoso.com', AccessRights: 'ReadPermission' }, scoped)).toBe('block');
    });
  });

  it('globs gate matching tasks; an exact policy wins over the glob', () => {
    expect(decide([cmd('Remove-JournalRule')], set, eve, grantsFor([]), NOW).verdicts[0]!.policy.id).toBe('removals');
    expect(decide([cmd('Remove-Transport')], set, eve, grantsFor([]), NOW).verdicts[0]!.policy.id).toBe('removals');
    expect(decide([cmd('Remove-Mailbox')], set, eve, grantsFor([]), NOW).verdicts[0]!.policy.id).toBe('remove-mailbox');
    const globGrant = grant({ policyId: 'removals', taskKeys: new Set(['remove-transport']) });
    expect(decide([cmd('Remove-Transport')], set, eve, grantsFor([globGrant]), NOW).action).toBe('forward');
    expect(decide([cmd('Remove-Other')], set, eve, grantsFor([globGrant]), NOW).action).toBe('block');
  });

  it('system accounts are never gated but every use is a verdict', () => {
    const svc: Identity = { user: 'svc@contoso.com', amr: [], expiresAt: null };
    const d = decide([cmd('New-JournalRule')], set, svc, grantsFor([]), NOW);
    expect(d.action).toBe('forward');
    expect(d.verdicts[0]!.kind).toBe('system');
  });

  it('a batch is blocked whole when any gated command lacks a grant', () => {
    const d = decide([cmd('Get-Mailbox'), cmd('New-JournalRule'), cmd('Set-JournalRule')], set, eve, grantsFor([grant()]), NOW);
    expect(d.action).toBe('block');
    expect(d.verdicts.map((v) => v.kind)).toEqual(['granted', 'ungranted']);
  });

  it('report-only forwards would-be blocks; disabled forwards everything; both still report verdicts', () => {
    const report = decide([cmd('New-JournalRule')], policies({ mode: 'report-only' }), eve, grantsFor([]), NOW);
    expect(report).toMatchObject({ action: 'forward', mode: 'report-only' });
    expect(report.verdicts[0]!.kind).toBe('ungranted');
    const off = decide([cmd('New-JournalRule')], policies({ enabled: false }), null, grantsFor([]), NOW);
    expect(off).toMatchObject({ action: 'forward', mode: 'disabled' });
  });

  it('when grants cannot be trusted, decisions resting on them answer 503; others are unaffected', () => {
    const held = decide([cmd('New-JournalRule')], set, eve, grantsFor([grant()]), NOW, false);
    expect(held).toMatchObject({ action: 'block', status: 503 });
    expect(held.verdicts[0]).toMatchObject({ kind: 'unverifiable', seen: 'granted' });
    expect(decide([cmd('New-JournalRule')], set, mallory, grantsFor([]), NOW, false).verdicts[0]).toMatchObject({ kind: 'unverifiable', seen: 'ungranted' });
    expect(decide([cmd('Get-Mailbox')], set, null, grantsFor([]), NOW, false).action).toBe('forward');
    expect(decide([cmd('New-JournalRule')], set, null, grantsFor([]), NOW, false).status).toBe(401);
    const svc: Identity = { user: 'svc@contoso.com', amr: [], expiresAt: null };
    expect(decide([cmd('New-JournalRule')], set, svc, grantsFor([]), NOW, false).action).toBe('forward');
    expect(decide([cmd('New-JournalRule'), cmd('Get-Mailbox')], set, null, grantsFor([]), NOW, false).status).toBe(401);
  });

  it('lookup cost does not depend on the number of exact policies', () => {
    const many = new PolicySet(
      policyFileSchema.parse({
        version: 1,
        settings: { defaultApproverGroup: 'a' },
        groups: { a: ['x@y'] },
        policies: Array.from({ length: 10_000 }, (_, i) => ({ id: `p${i}`, task: `Set-Thing${i}` })),
      }),
    );
    expect(many.policiesFor('set-thing9999')![0]!.id).toBe('p9999');
    expect(many.policiesFor('get-mailbox')).toBeNull();
  });
});
