import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GrantIndex } from '../../src/grants/grant-index.js';
import type { Grant } from '../../src/policy/decide.js';

const grant = (requestId: string, over: Partial<Grant> = {}): Grant => ({
  requestId,
  requester: 'eve@c.com',
  policyId: 'ops',
  taskKeys: new Set(['set-a', 'set-b']),
  scope: { identity: 'mb1' },
  expiresAt: 1_800_000_000_000,
  ...over,
});

describe('GrantIndex', () => {
  it('gives back what was set, with task keys as a Set, and nothing for a user without grants', () => {
    const index = new GrantIndex();
    const grants = [grant('r1'), grant('r2', { taskKeys: new Set(['x']), scope: null })];
    index.set('eve@c.com', grants);
    expect(index.get('eve@c.com')).toEqual(grants);
    expect(index.get('eve@c.com')[0]!.taskKeys).toBeInstanceOf(Set);
    expect(index.get('bob@c.com')).toEqual([]);
    expect(index.users).toBe(1);
  });

  it('parses a hot user once: the same list until the next write', () => {
    const index = new GrantIndex();
    index.set('eve@c.com', [grant('r1')]);
    const first = index.get('eve@c.com');
    expect(index.get('eve@c.com')).toBe(first);
    expect(Object.isFrozen(first)).toBe(true);
  });

  it('never gives a list older than the last write (a revoked grant is gone at once)', () => {
    const index = new GrantIndex();
    index.set('eve@c.com', [grant('r1'), grant('r2')]);
    expect(index.get('eve@c.com')).toHaveLength(2); // now hot
    index.set('eve@c.com', [grant('r2')]);
    expect(index.get('eve@c.com').map((g) => g.requestId)).toEqual(['r2']);
    index.set('eve@c.com', []);
    expect(index.get('eve@c.com')).toEqual([]);
    expect(index.users).toBe(0);
  });

  it('peek gives a fresh copy and leaves the stored list alone', () => {
    const index = new GrantIndex();
    index.set('eve@c.com', [grant('r1')]);
    const copy = index.peek('eve@c.com');
    copy.push(grant('r9'));
    (copy[0]!.taskKeys as Set<string>).add('remove-mailbox');
    expect(index.get('eve@c.com')).toEqual([grant('r1')]);
    expect(index.peek('bob@c.com')).toEqual([]);
  });

  it('fails closed: a write that cannot be stored leaves the user with no grants, not the old ones', () => {
    const index = new GrantIndex();
    index.set('eve@c.com', [grant('r1'), grant('r2')]);
    index.get('eve@c.com');
    const unstorable = grant('r2', { scope: { identity: 1n as unknown as string } });
    expect(() => index.set('eve@c.com', [unstorable])).toThrow(TypeError);
    expect(index.get('eve@c.com')).toEqual([]);
    expect(index.peek('eve@c.com')).toEqual([]);
  });

  it('behaves like a plain Map of users to lists, whatever the LRU evicts', () => {
    const users = ['a', 'b', 'c', 'd', 'e'];
    const op = fc.oneof(
      fc.record({ kind: fc.constant('get' as const), user: fc.constantFrom(...users) }),
      fc.record({ kind: fc.constant('set' as const), user: fc.constantFrom(...users), ids: fc.array(fc.constantFrom('r1', 'r2', 'r3'), { maxLength: 3 }) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), fc.integer({ min: 1, max: 4 }), (ops, hotUsers) => {
        const index = new GrantIndex(hotUsers);
        const model = new Map<string, Grant[]>();
        for (const o of ops) {
          if (o.kind === 'set') {
            const grants = o.ids.map((id) => grant(id, { requester: o.user }));
            index.set(o.user, grants);
            if (grants.length === 0) model.delete(o.user);
            else model.set(o.user, grants);
          } else {
            expect(index.get(o.user)).toEqual(model.get(o.user) ?? []);
          }
        }
        for (const u of users) expect(index.get(u)).toEqual(model.get(u) ?? []);
        expect(index.users).toBe(model.size);
      }),
      { numRuns: 300 },
    );
  });
});
