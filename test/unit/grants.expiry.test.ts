import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AuditEvent } from '../../src/audit/log.js';
import { policyFileSchema } from '../../src/config/schema.js';
import { ExpiryQueue } from '../../src/grants/expiry-queue.js';
import { AccessService } from '../../src/grants/service.js';
import { openEmbeddedStore, type RequestStore } from '../../src/grants/store.js';
import { PolicySet } from '../../src/policy/compile.js';
import type { Identity } from '../../src/policy/decide.js';

const HOUR = 3_600_000;

describe('ExpiryQueue', () => {
  it('pops exactly the due ids, earliest first, whatever order they were pushed in', () => {
    let seed = 7;
    const random = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const queue = new ExpiryQueue();
    const all = Array.from({ length: 2000 }, (_, i) => ({ at: Math.floor(random() * 10_000), id: `r${i}` }));
    for (const { at, id } of all) queue.push(at, id);
    expect(queue.popDue(-1)).toEqual([]);

    const popped: string[] = [];
    for (let now = 0; now <= 10_000; now += 250) {
      const due = queue.popDue(now);
      const dueAt = due.map((id) => all[Number(id.slice(1))]!.at);
      expect(dueAt.every((at) => at <= now)).toBe(true);
      expect(dueAt).toEqual([...dueAt].sort((a, b) => a - b));
      popped.push(...due);
      // Nothing due is left behind.
      expect(all.filter((e) => e.at <= now).length).toBe(popped.length);
    }
    expect(new Set(popped).size).toBe(2000);
    expect(queue.size).toBe(0);
  });

  it('refuses a time that is not a finite number, so one bad deadline cannot block the others', () => {
    const queue = new ExpiryQueue();
    expect(queue.push(100, 'a')).toBe(true);
    expect(queue.push(Number.NaN, 'bad')).toBe(false);
    expect(queue.push(Number.POSITIVE_INFINITY, 'never')).toBe(false);
    expect(queue.push(50, 'b')).toBe(true);
    expect(queue.popDue(1e15)).toEqual(['b', 'a']);
  });

  it('keeps duplicates (an id queued twice pops twice) and empties on clear', () => {
    const queue = new ExpiryQueue();
    queue.push(5, 'a');
    queue.push(3, 'a');
    queue.push(4, 'b');
    expect(queue.popDue(4)).toEqual(['a', 'b']);
    queue.clear();
    expect(queue.popDue(100)).toEqual([]);
  });
});

describe('AccessService.sweep', () => {
  const policies = new PolicySet(
    policyFileSchema.parse({
      version: 1,
      settings: { defaultApproverGroup: 'approvers', maxDurationHours: 24, pendingExpiryHours: 24 },
      groups: { approvers: ['alice@c.com'] },
      policies: [{ id: 'p', task: 'New-Thing', maxDurationHours: 24 }],
    }),
  );
  const alice: Identity = { user: 'alice@c.com', amr: [], expiresAt: null };
  const user = (i: number): Identity => ({ user: `u${i}@c.com`, amr: [], expiresAt: null });

  let dir: string;
  let store: RequestStore;
  let now: number;
  let events: AuditEvent[];
  let failLocks: boolean;
  let service: AccessService;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pamgate-expiry-'));
    const real = await openEmbeddedStore(dir);
    failLocks = false;
    store = { ...real, withLock: (id, fn) => (failLocks ? Promise.reject(new Error('store down')) : real.withLock(id, fn)) };
    now = Date.parse('2026-11-23T00:00:00Z');
    events = [];
    service = new AccessService(store, { append: async (e) => void events.push(e) }, () => policies, () => now);
    await service.load();
  });
  afterEach(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  const create = (i: number, durationHours = 4) => service.create(user(i), { task: 'New-Thing', reason: 'r', durationHours }, null);
  const expiredIds = (): string[] => events.filter((e) => e.type === 'request.expired').map((e) => e.requestId as string);

  it('expires pending requests and grants when they fall due, and nothing before', async () => {
    const pending = await create(1);
    const granted = await create(2, 4);
    await service.approve(granted.id, alice, null, null);

    now += 4 * HOUR - 1;
    expect(await service.sweep()).toBe(0);
    now += 1;
    expect(await service.sweep()).toBe(1);
    expect(expiredIds()).toEqual([granted.id]);
    expect(service.grantsOf('u2@c.com')).toEqual([]);

    now += 20 * HOUR;
    expect(await service.sweep()).toBe(1);
    expect(expiredIds()).toEqual([granted.id, pending.id]);
    expect(await service.sweep()).toBe(0);
  });

  it('an approval that outlives the pending deadline is not expired by the stale pending entry', async () => {
    const req = await create(1, 8);
    now += 20 * HOUR;
    await service.approve(req.id, alice, null, null); // grant ends at 28 h, the pending deadline was 24 h

    now += 5 * HOUR; // 25 h: the pending entry pops, the request is approved and still valid
    expect(await service.sweep()).toBe(0);
    expect(service.grantsOf('u1@c.com')).toHaveLength(1);
    now += 3 * HOUR; // 28 h
    expect(await service.sweep()).toBe(1);
    expect(expiredIds()).toEqual([req.id]);
  });

  it('ended requests are never swept, and a sweep with nothing due touches none', async () => {
    const reqs = await Promise.all(Array.from({ length: 50 }, (_, i) => create(i)));
    for (const r of reqs.slice(0, 25)) await service.cancel(r.id, user(Number(r.requester.slice(1, -6))), null);
    now += 23 * HOUR;
    expect(await service.sweep()).toBe(0);
    now += 1 * HOUR;
    expect(await service.sweep()).toBe(25);
    expect(new Set(expiredIds())).toEqual(new Set(reqs.slice(25).map((r) => r.id)));
  });

  it('a sweep that cannot reach the store retries what was due next time', async () => {
    const req = await create(1);
    now += 25 * HOUR;
    failLocks = true;
    expect(await service.sweep()).toBe(0);
    failLocks = false;
    expect(await service.sweep()).toBe(1);
    expect(expiredIds()).toEqual([req.id]);
  });

  it('requests loaded from the store at start are queued too', async () => {
    const req = await create(1);
    const fresh = new AccessService(store, { append: async (e) => void events.push(e) }, () => policies, () => now);
    await fresh.load();
    now += 24 * HOUR;
    expect(await fresh.sweep()).toBe(1);
    expect(expiredIds()).toEqual([req.id]);
  });
});
