import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AuditEvent } from '../../src/audit/log.js';
import { policyFileSchema } from '../../src/config/schema.js';
import { AccessService, ServiceError } from '../../src/grants/service.js';
import { openEmbeddedStore, type RequestStore } from '../../src/grants/store.js';
import { PolicySet } from '../../src/policy/compile.js';
import { decide, type Command, type Grant, type Identity } from '../../src/policy/decide.js';
import { taskKey } from '../../src/policy/names.js';

/**
 * Plausible one-line bugs in the decision logic that no other test would notice. Each case
 * names the bug it catches; the code is right today, these keep a refactor from breaking it.
 */

const NOW = Date.parse('2026-11-23T10:00:00Z');
const HOUR = 3_600_000;

const set = (file: Record<string, unknown>): PolicySet => new PolicySet(policyFileSchema.parse({ version: 1, ...file }));
const cmd = (name: string, params: Record<string, unknown> = {}): Command => ({
  name,
  key: taskKey(name),
  params: new Map(Object.entries(params).map(([k, v]) => [k.toLowerCase(), v])),
});
const eve: Identity = { user: 'eve@contoso.com', amr: [], expiresAt: null };
const grant = (over: Partial<Grant>): Grant => ({
  requestId: 'r1',
  requester: 'eve@contoso.com',
  policyId: 'journal',
  taskKeys: new Set(['new-journalrule']),
  scope: null,
  expiresAt: NOW + HOUR,
  ...over,
});

describe('decision regressions', () => {
  const policies = set({
    settings: { defaultApproverGroup: 'approvers', systemAccounts: ['SVC-Backup@Contoso.COM'] },
    groups: { approvers: ['alice@contoso.com'] },
    policies: [
      { id: 'journal', task: 'New-JournalRule' },
      { id: 'removal', task: 'Remove-Mailbox' },
      { id: 'perm', task: 'Add-MailboxPermission' },
    ],
  });

  it('a batch is blocked by its highest refusal, not its last command: [ungranted, granted] is 403', () => {
    const grants = () => [grant({})];
    const d = decide([cmd('Remove-Mailbox'), cmd('New-JournalRule')], policies, eve, grants, NOW);
    expect(d).toMatchObject({ action: 'block', status: 403 });
    // and the other way round, and an unidentified first command beside a granted one
    expect(decide([cmd('New-JournalRule'), cmd('Remove-Mailbox')], policies, eve, grants, NOW)).toMatchObject({ action: 'block', status: 403 });
    expect(decide([cmd('Remove-Mailbox'), cmd('Get-Mailbox')], policies, null, grants, NOW)).toMatchObject({ action: 'block', status: 401 });
  });

  it('system accounts match case-insensitively on both sides: a configured SVC-Backup@Contoso.COM is svc-backup@contoso.com', () => {
    const svc: Identity = { user: 'svc-backup@contoso.com', amr: [], expiresAt: null };
    const d = decide([cmd('Remove-Mailbox')], policies, svc, () => [], NOW);
    expect(d.action).toBe('forward');
    expect(d.verdicts.map((v) => v.kind)).toEqual(['system']);
  });

  it('a scope-only grant (no parameter rule) still refuses a parameter name PowerShell could bind unpredictably', () => {
    const scoped = grant({ policyId: 'perm', taskKeys: new Set(['add-mailboxpermission']), scope: { accessrights: 'ReadPermission' } });
    const grants = () => [scoped];
    expect(decide([cmd('Add-MailboxPermission', { AccessRights: 'ReadPermission' })], policies, eve, grants, NOW).action).toBe('forward');
    const smuggled = cmd('Add-MailboxPermission', { AccessRights: 'ReadPermission', 'AccessRights:': 'FullAccess' });
    expect(decide([smuggled], policies, eve, grants, NOW)).toMatchObject({ action: 'block', status: 403 });
  });

  it("a policy's maxDurationHours is capped by settings.maxDurationHours (72 under a global 24 is 24)", () => {
    const capped = set({ settings: { maxDurationHours: 24 }, policies: [{ id: 'long', task: 'New-Thing', maxDurationHours: 72 }] });
    expect(capped.policies.get('long')!.maxDurationHours).toBe(24);
  });
});

describe('AccessService regressions', () => {
  const policies = set({
    settings: { defaultApproverGroup: 'approvers', maxDurationHours: 24 },
    groups: { approvers: ['alice@c.com'] },
    policies: [
      { id: 'auto-mfa', task: 'Set-Thing', approval: 'auto', requireMfa: true },
      { id: 'auto-long', task: 'New-Thing', approval: 'auto', maxDurationHours: 72 },
    ],
  });
  const noMfa: Identity = { user: 'eve@c.com', amr: ['pwd'], expiresAt: null };
  let dir: string;
  let store: RequestStore;
  let events: AuditEvent[];
  let service: AccessService;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pamgate-regressions-'));
    store = await openEmbeddedStore(dir);
    events = [];
    service = new AccessService(store, { append: async (e: AuditEvent) => void events.push(e) }, () => policies, () => NOW);
    await service.load();
  });
  afterEach(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('requireMfa holds under approval: auto — a token without MFA gets 403 and no grant', async () => {
    const err = await service.create(noMfa, { task: 'Set-Thing', reason: 'r' }, null).then(
      () => null,
      (e: unknown) => e as ServiceError,
    );
    expect(err?.status).toBe(403);
    expect(service.grantsOf('eve@c.com')).toEqual([]);
    expect(events.map((e) => e.type)).toEqual(['request.refused']);
  });

  it('an auto grant under a policy saying 72 h never outlives the global 24 h maximum', async () => {
    const created = await service.create(noMfa, { task: 'New-Thing', reason: 'r', durationHours: 24 }, null);
    expect(created.status).toBe('approved');
    expect(Date.parse(created.expiresAt!) - NOW).toBeLessThanOrEqual(24 * HOUR);
    const longer = await service.create(noMfa, { task: 'New-Thing', reason: 'r', durationHours: 72 }, null).then(
      (r) => r,
      (e: unknown) => e as ServiceError,
    );
    // Refused, or clamped: either way no grant beyond 24 h exists.
    if (!(longer instanceof ServiceError)) expect(Date.parse(longer.expiresAt!) - NOW).toBeLessThanOrEqual(24 * HOUR);
    for (const g of service.grantsOf('eve@c.com')) expect(g.expiresAt - NOW).toBeLessThanOrEqual(24 * HOUR);
  });
});
