import { describe, expect, it } from 'vitest';
import * as model from '../../src/grants/model.js';
import type { AccessRequest } from '../../src/grants/model.js';
import { ValuePool } from '../../src/grants/value-pool.js';

const approved = (id: string, tasks: string[], over: Partial<AccessRequest> = {}): AccessRequest => ({
  id,
  requester: 'eve@c.com',
  task: null,
  role: 'Ops',
  tasks,
  policy: 'ops',
  approverGroup: 'approvers',
  approvalsRequired: 1,
  reason: 'x',
  ticket: null,
  parameters: { Identity: 'mb1' },
  durationHours: 4,
  status: 'approved',
  createdAt: '2026-11-23T10:00:00.000Z',
  pendingExpiresAt: '2026-11-24T10:00:00.000Z',
  approvals: [{ approver: 'alice@c.com', at: '2026-11-23T10:01:00.000Z', comment: 'ok' }],
  approvedAt: '2026-11-23T10:01:00.000Z',
  expiresAt: '2026-11-23T14:01:00.000Z',
  decidedBy: 'alice@c.com',
  decidedAt: '2026-11-23T10:01:00.000Z',
  comment: null,
  ...over,
});

describe('ValuePool', () => {
  it('gives back a request equal to the one it was given, and leaves that one alone', () => {
    const pool = new ValuePool();
    const req = approved('r1', ['set-a', 'set-b']);
    const before = structuredClone(req);
    const pooled = pool.request(req);
    expect(pooled).toEqual(before);
    expect(req).toEqual(before);
    expect(pooled).not.toBe(req);
    expect(pooled.approvals[0]).not.toBe(req.approvals[0]);
  });

  it('shares one array and one Set per distinct task list, in order, and none across different lists', () => {
    const pool = new ValuePool();
    const a = pool.request(approved('r1', ['set-a', 'set-b']));
    const b = pool.request(approved('r2', ['set-a', 'set-b']));
    const reversed = pool.request(approved('r3', ['set-b', 'set-a']));
    const joined = pool.request(approved('r4', ['set-a,set-b']));
    expect(a.tasks).toBe(b.tasks);
    expect(reversed.tasks).not.toBe(a.tasks);
    expect(reversed.tasks).toEqual(['set-b', 'set-a']);
    expect(joined.tasks).not.toBe(a.tasks);
    expect(Object.isFrozen(a.tasks)).toBe(true);
    const g1 = model.grantOf(a, (t) => pool.set(t))!;
    const g2 = model.grantOf(b, (t) => pool.set(t))!;
    const g4 = model.grantOf(joined, (t) => pool.set(t))!;
    expect(g1.taskKeys).toBe(g2.taskKeys);
    expect([...g1.taskKeys]).toEqual(['set-a', 'set-b']);
    expect(g4.taskKeys).not.toBe(g1.taskKeys);
    expect(g4.taskKeys.has('set-a')).toBe(false);
    expect(g4.taskKeys.has('set-a,set-b')).toBe(true);
  });

  it('starts over after clear()', () => {
    const pool = new ValuePool();
    const a = pool.request(approved('r1', ['set-a']));
    pool.clear();
    const b = pool.request(approved('r2', ['set-a']));
    expect(b.tasks).not.toBe(a.tasks);
    expect(b.tasks).toEqual(a.tasks);
  });

  it('keeps nulls null', () => {
    const pool = new ValuePool();
    const req = approved('r1', ['new-thing'], { task: 'New-Thing', role: null, approverGroup: null, decidedBy: null, approvals: [] });
    expect(pool.request(req)).toEqual(req);
  });
});
