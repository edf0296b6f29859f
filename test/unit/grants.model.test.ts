import { describe, expect, it } from 'vitest';
import { policyFileSchema } from '../../src/config/schema.js';
import * as model from '../../src/grants/model.js';
import type { AccessRequest } from '../../src/grants/model.js';
import { PolicySet } from '../../src/policy/compile.js';
import type { Identity } from '../../src/policy/decide.js';

const NOW = Date.parse('2026-11-23T10:00:00Z');
const HOUR = 3_600_000;
const set = new PolicySet(
  policyFileSchema.parse({
    version: 1,
    settings: { defaultApproverGroup: 'approvers', adminGroup: 'admins', maxDurationHours: 24 },
    groups: { approvers: ['alice@c.com', 'bob@c.com', 'eve@c.com'], admins: ['root@c.com'] },
    policies: [
      { id: 'p', task: 'New-Thing', maxDurationHours: 8 },
      { id: 'mfa', task: 'Set-Thing', requireMfa: true },
      { id: 'two', task: 'Remove-Thing', approvals: 2 },
    ],
  }),
);
const who = (user: string, amr: string[] = []): Identity => ({ user, amr, expiresAt: null });
const pending = (over: Partial<AccessRequest> = {}): AccessRequest => ({
  id: 'r1',
  requester: 'eve@c.com',
  task: 'New-Thing',
  role: null,
  tasks: ['new-thing'],
  policy: 'p',
  approverGroup: 'approvers',
  approvalsRequired: 1,
  reason: 'x',
  ticket: null,
  parameters: null,
  durationHours: 4,
  status: 'pending',
  createdAt: new Date(NOW).toISOString(),
  pendingExpiresAt: new Date(NOW + 24 * HOUR).toISOString(),
  approvals: [],
  approvedAt: null,
  expiresAt: null,
  decidedBy: null,
  decidedAt: null,
  comment: null,
  ...over,
});
const refused = (fn: () => unknown, status: number) => {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(model.TransitionError);
    expect((err as model.TransitionError).status).toBe(status);
    return;
  }
  throw new Error('expected a refusal');
};

describe('request state machine', () => {
  it('one approval by a group member approves and starts the grant clock', () => {
    const next = model.approve(pending(), who('alice@c.com'), 'ok', set, NOW);
    expect(next.status).toBe('approved');
    expect(Date.parse(next.expiresAt!)).toBe(NOW + 4 * HOUR);
    expect(model.grantOf(next)).toMatchObject({ requestId: 'r1', requester: 'eve@c.com', expiresAt: NOW + 4 * HOUR });
  });

  it('the requester cannot approve their own request, even as a group member', () => {
    refused(() => model.approve(pending(), who('eve@c.com'), null, set, NOW), 403);
  });

  it('non-members cannot approve or deny; admins are not approvers', () => {
    refused(() => model.approve(pending(), who('mallory@c.com'), null, set, NOW), 403);
    refused(() => model.deny(pending(), who('root@c.com'), null, set, NOW), 403);
  });

  it('approvals: 2 needs two distinct approvers', () => {
    const once = model.approve(pending({ policy: 'two', approvalsRequired: 2 }), who('alice@c.com'), null, set, NOW);
    expect(once.status).toBe('pending');
    refused(() => model.approve(once, who('alice@c.com'), null, set, NOW), 409);
    const twice = model.approve(once, who('bob@c.com'), null, set, NOW);
    expect(twice.status).toBe('approved');
    expect(twice.approvals.map((a) => a.approver)).toEqual(['alice@c.com', 'bob@c.com']);
  });

  it('deny is final', () => {
    const denied = model.deny(pending(), who('alice@c.com'), 'no', set, NOW);
    expect(denied.status).toBe('denied');
    refused(() => model.approve(denied, who('bob@c.com'), null, set, NOW), 409);
    refused(() => model.cancel(denied, who('eve@c.com'), NOW), 409);
  });

  it('pending requests expire unanswered', () => {
    const req = pending();
    expect(model.effectiveStatus(req, NOW + 24 * HOUR - 1)).toBe('pending');
    expect(model.effectiveStatus(req, NOW + 24 * HOUR)).toBe('expired');
    refused(() => model.approve(req, who('alice@c.com'), null, set, NOW + 25 * HOUR), 409);
    expect(model.expire(req, NOW + 25 * HOUR)?.status).toBe('expired');
    expect(model.expire(req, NOW)).toBeNull();
  });

  it('grants expire', () => {
    const approved = model.approve(pending(), who('alice@c.com'), null, set, NOW);
    expect(model.effectiveStatus(approved, NOW + 4 * HOUR)).toBe('expired');
    refused(() => model.revoke(approved, who('alice@c.com'), null, set, NOW + 5 * HOUR), 409);
  });

  it('cancel: only the requester, only while pending', () => {
    refused(() => model.cancel(pending(), who('alice@c.com'), NOW), 403);
    expect(model.cancel(pending(), who('eve@c.com'), NOW).status).toBe('canceled');
  });

  it('revoke: approvers of it or admins, only while approved', () => {
    const approved = model.approve(pending(), who('alice@c.com'), null, set, NOW);
    refused(() => model.revoke(approved, who('mallory@c.com'), null, set, NOW), 403);
    refused(() => model.revoke(pending(), who('alice@c.com'), null, set, NOW), 409);
    expect(model.revoke(approved, who('root@c.com'), null, set, NOW).status).toBe('revoked');
    const revoked = model.revoke(approved, who('bob@c.com'), null, set, NOW);
    expect(model.grantOf(revoked)).toBeNull();
  });

  it('a reloaded policy bounds the grant at approval: its current maximum duration and requirements', () => {
    const reloaded = (over: Record<string, unknown>) =>
      new PolicySet(
        policyFileSchema.parse({
          version: 1,
          settings: { defaultApproverGroup: 'approvers', maxDurationHours: 24 },
          groups: { approvers: ['alice@c.com'] },
          policies: [{ id: 'p', task: 'New-Thing', maxDurationHours: 8, ...over }],
        }),
      );
    const filed = pending({ durationHours: 8 });
    const shorter = model.approve(filed, who('alice@c.com'), null, reloaded({ maxDurationHours: 1 }), NOW);
    expect([shorter.status, shorter.durationHours, shorter.expiresAt]).toEqual(['approved', 1, new Date(NOW + HOUR).toISOString()]);
    expect(model.approve(filed, who('alice@c.com'), null, reloaded({}), NOW).durationHours).toBe(8);
    refused(() => model.approve(filed, who('alice@c.com'), null, reloaded({ requireTicket: true }), NOW), 409);
    expect(model.approve({ ...filed, ticket: 'CHG-1' }, who('alice@c.com'), null, reloaded({ requireTicket: true }), NOW).status).toBe('approved');
    refused(() => model.approve({ ...filed, reason: '' }, who('alice@c.com'), null, reloaded({ requireReason: true }), NOW), 409);
  });

  it('requireMfa: approvers need an MFA token', () => {
    const req = pending({ policy: 'mfa', requesterMfa: true });
    refused(() => model.approve(req, who('alice@c.com', ['pwd']), null, set, NOW), 403);
    expect(model.approve(req, who('alice@c.com', ['pwd', 'mfa']), null, set, NOW).status).toBe('approved');
  });

  it('requireMfa added by a reload: a request filed without MFA cannot be approved, only denied or canceled', () => {
    const mfaApprover = who('alice@c.com', ['pwd', 'mfa']);
    const withoutMfa = pending({ policy: 'mfa', requesterMfa: false });
    refused(() => model.approve(withoutMfa, mfaApprover, null, set, NOW), 409);
    // a record written before the flag was kept: unknown counts as without (fail closed)
    const { requesterMfa: _dropped, ...legacy } = pending({ policy: 'mfa' });
    refused(() => model.approve(legacy, mfaApprover, null, set, NOW), 409);
    expect(model.deny(withoutMfa, mfaApprover, null, set, NOW).status).toBe('denied');
    expect(model.cancel(withoutMfa, who('eve@c.com'), NOW).status).toBe('canceled');
    // a policy without requireMfa does not care how the request was filed
    expect(model.approve(pending({ requesterMfa: false }), who('alice@c.com'), null, set, NOW).status).toBe('approved');
  });

  it('a reloaded policy applies to pending requests: its current group and approval count decide', () => {
    const reloaded = new PolicySet(
      policyFileSchema.parse({
        version: 1,
        settings: { defaultApproverGroup: 'approvers', adminGroup: 'admins' },
        groups: { approvers: ['alice@c.com', 'bob@c.com'], officers: ['carol@c.com', 'dave@c.com'], admins: ['root@c.com'] },
        policies: [{ id: 'p', task: 'New-Thing', approverGroup: 'officers', approvals: 2 }],
      }),
    );
    expect(model.approve(pending(), who('alice@c.com'), null, set, NOW).status).toBe('approved'); // under the old file
    refused(() => model.approve(pending(), who('alice@c.com'), null, reloaded, NOW), 403);
    const one = model.approve(pending(), who('carol@c.com'), null, reloaded, NOW);
    expect(one).toMatchObject({ status: 'pending', approverGroup: 'officers', approvalsRequired: 2 });
    expect(model.approve(one, who('dave@c.com'), null, reloaded, NOW).status).toBe('approved');
    expect(model.mayView(pending(), 'carol@c.com', reloaded)).toBe(true);
    // an approval given by someone who has since left the group no longer counts
    const stale = pending({ approvalsRequired: 2, approvals: [{ approver: 'alice@c.com', at: new Date(NOW).toISOString(), comment: null }] });
    expect(model.approve(stale, who('carol@c.com'), null, reloaded, NOW).status).toBe('pending');
  });

  it('a request whose policy was removed can be denied or canceled, not approved', () => {
    const gone = new PolicySet(policyFileSchema.parse({ version: 1, settings: { defaultApproverGroup: 'approvers' }, groups: { approvers: ['alice@c.com'] }, policies: [] }));
    refused(() => model.approve(pending(), who('alice@c.com'), null, gone, NOW), 409);
    expect(model.deny(pending(), who('alice@c.com'), null, gone, NOW).status).toBe('denied');
  });

  it('duration is clamped to the policy and global maximum', () => {
    const p = set.policies.get('p')!;
    expect(model.clampDuration(undefined, p, set)).toBe(4);
    expect(model.clampDuration(2, p, set)).toBe(2);
    expect(model.clampDuration(100, p, set)).toBe(8);
    expect(model.clampDuration(100, set.policies.get('mfa')!, set)).toBe(24);
  });

  it('visibility: requester, approvers, admins', () => {
    expect(model.mayView(pending(), 'eve@c.com', set)).toBe(true);
    expect(model.mayView(pending(), 'bob@c.com', set)).toBe(true);
    expect(model.mayView(pending(), 'root@c.com', set)).toBe(true);
    expect(model.mayView(pending(), 'mallory@c.com', set)).toBe(false);
  });
});
