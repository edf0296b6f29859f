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
  it('shares one Set per distinct task list, in order, and none across different lists', () => {
    const pool = new ValuePool();
    const g1 = model.grantOf(approved('r1', ['set-a', 'set-b']), pool)!;
    const g2 = model.grantOf(approved('r2', ['set-a', 'set-b']), pool)!;
    const reversed = model.grantOf(approved('r3', ['set-b', 'set-a']), pool)!;
    const joined = model.grantOf(approved('r4', ['set-a,set-b']), pool)!;
    expect(g1.taskKeys).toBe(g2.taskKeys);
    expect([...g1.taskKeys]).toEqual(['set-a', 'set-b']);
    expect(reversed.taskKeys).not.toBe(g1.taskKeys);
    expect([...reversed.taskKeys]).toEqual(['set-b', 'set-a']);
    expect(joined.taskKeys).not.toBe(g1.taskKeys);
    expect(joined.taskKeys.has('set-a')).toBe(false);
    expect(joined.taskKeys.has('set-a,set-b')).toBe(true);
  });

  it('gives a grant equal to the unshared one, and leaves the request alone', () => {
    // (Which string object a grant holds is not observable from JavaScript; the heap numbers in
    // bench/micro.mjs show the sharing.)
    const pool = new ValuePool();
    const req = approved('r1', ['set-a', 'set-b']);
    const before = structuredClone(req);
    expect(model.grantOf(req, pool)).toEqual(model.grantOf(req));
    expect(req).toEqual(before);
  });

  it('starts over after clear()', () => {
    const pool = new ValuePool();
    const a = pool.set(['set-a']);
    pool.clear();
    const b = pool.set(['set-a']);
    expect(b).not.toBe(a);
    expect([...b]).toEqual([...a]);
  });
});
