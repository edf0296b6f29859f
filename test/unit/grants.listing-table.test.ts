import { describe, expect, it } from 'vitest';
import { ListingTable, type Listing } from '../../src/grants/listing-table.js';

const listing = (over: Partial<Listing> = {}): Listing => ({
  requester: 'eve@c.com',
  policy: 'ops',
  approverGroup: 'approvers',
  approvalsRequired: 1,
  status: 'pending',
  dueAt: 2_000,
  createdAt: 1_000,
  ...over,
});

const rows = (table: ListingTable): Array<[string, Listing]> => {
  const out: Array<[string, Listing]> = [];
  table.forEach((id, row) => out.push([id, { ...row }]));
  return out;
};

describe('ListingTable', () => {
  it('gives back every field, in the order first set; a second set updates in place', () => {
    const table = new ListingTable();
    const a = listing();
    const b = listing({ requester: 'bob@c.com', policy: 'sec', approverGroup: null, approvalsRequired: 2, status: 'revoked', dueAt: NaN, createdAt: -Infinity });
    table.set('a', a);
    table.set('b', b);
    expect(rows(table)).toEqual([['a', a], ['b', b]]);
    const a2 = listing({ status: 'approved', dueAt: 9_000, approvalsRequired: 0 });
    table.set('a', a2);
    expect(rows(table)).toEqual([['a', a2], ['b', b]]);
    expect(table.size).toBe(2);
  });

  it('keeps every row as it grows past its initial columns', () => {
    const table = new ListingTable();
    const statuses = ['pending', 'approved', 'denied', 'canceled', 'expired', 'revoked'] as const;
    const made = Array.from({ length: 5_000 }, (_, i) =>
      listing({ requester: `u${i % 7}`, policy: `p${i % 3}`, approverGroup: i % 2 ? null : `g${i % 5}`, approvalsRequired: i % 4, status: statuses[i % 6], dueAt: i * 1.5, createdAt: i }),
    );
    made.forEach((l, i) => table.set(`r${i}`, l));
    expect(rows(table)).toEqual(made.map((l, i) => [`r${i}`, l]));
  });

  it('forgets a deleted row and keeps every other one intact (the last row moves into the gap)', () => {
    const table = new ListingTable();
    const made = Array.from({ length: 50 }, (_, i) => listing({ requester: `u${i}`, status: i % 2 ? 'approved' : 'canceled', dueAt: 10_000 + i, createdAt: i }));
    made.forEach((l, i) => table.set(`r${i}`, l));
    for (const i of [0, 49, 17, 3]) expect(table.delete(`r${i}`)).toBe(true);
    expect(table.delete('r17')).toBe(false);
    expect(table.size).toBe(46);
    expect(table.createdAt('r17')).toBeUndefined();
    const left = new Map(rows(table));
    expect(left.size).toBe(46);
    made.forEach((l, i) => expect(left.get(`r${i}`)).toEqual([0, 49, 17, 3].includes(i) ? undefined : l));
    expect(table.countActive(0)).toBe(made.filter((l, i) => l.status === 'approved' && ![0, 49, 17, 3].includes(i)).length);
    // A row set after deletes is found, and updates in place.
    table.set('r17', made[17]!);
    table.set('r17', { ...made[17]!, status: 'revoked' });
    expect(table.size).toBe(47);
    expect(new Map(rows(table)).get('r17')!.status).toBe('revoked');
  });

  it('counts as active the approved requests not yet due', () => {
    const table = new ListingTable();
    table.set('due-later', listing({ status: 'approved', dueAt: 5_000 }));
    table.set('due-now', listing({ status: 'approved', dueAt: 3_000 }));
    table.set('no-deadline', listing({ status: 'approved', dueAt: NaN }));
    table.set('pending', listing({ status: 'pending', dueAt: 5_000 }));
    table.set('revoked', listing({ status: 'revoked', dueAt: NaN }));
    expect(table.countActive(3_000)).toBe(1);
    expect(table.countActive(2_999)).toBe(2);
  });
});
