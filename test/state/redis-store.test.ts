import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AccessRequest } from '../../src/grants/model.js';
import { openRedisStore } from '../../src/grants/redis-store.js';
import { AccessService } from '../../src/grants/service.js';
import type { RequestStore } from '../../src/grants/store.js';
import { StoreSync } from '../../src/grants/sync.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { until } from './helpers/wait.js';

const log = pino({ level: 'silent' });
let redis: TestRedis;
const stores: RequestStore[] = [];
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await Promise.all(stores.map((s) => s.close()));
  await redis?.stop();
});

async function open(opts: { lockTtlMs?: number; lockWaitMs?: number } = {}): Promise<Awaited<ReturnType<typeof openRedisStore>>> {
  const s = await openRedisStore(redis.url, { log, ...opts });
  stores.push(s);
  return s;
}

function request(id: string, patch: Partial<AccessRequest> = {}): AccessRequest {
  return {
    id, requester: 'xena@contoso.com', task: 'new-journalrule', role: null, tasks: ['new-journalrule'], policy: 'journal-rules',
    approverGroup: 'pam-approvers', approvalsRequired: 1, reason: 'r', ticket: null, parameters: null, durationHours: 1,
    status: 'pending', createdAt: new Date().toISOString(), pendingExpiresAt: new Date(Date.now() + 3_600_000).toISOString(),
    approvals: [], approvedAt: null, expiresAt: null, decidedBy: null, decidedAt: null, comment: null, ...patch,
  };
}

describe('Redis request store', () => {
  it('stores through the commit script and reads back through keyv; every commit lands in the change feed', async () => {
    const s = await open();
    const { version } = await s.changes.since(0);
    const r2 = request('r2', { reason: ':leading colon, "quotes" and unicode ✓', parameters: { Identity: ':x' } });
    await s.put(request('r1'));
    await s.put(r2);
    expect(await s.get('r2')).toEqual(r2);
    const changed = await s.changes.since(version);
    expect(changed.ids.sort()).toEqual(['r1', 'r2']);
    expect(changed.version).toBe(version + 2);
    const ids: string[] = [];
    await s.forEach((r) => ids.push(r.id));
    expect(ids).toEqual(expect.arrayContaining(['r1', 'r2']));
  });

  it('serialises lock holders across store instances (no lost update)', async () => {
    const [s1, s2] = [await open(), await open()];
    await s1.put(request('counter', { approvals: [] }));
    const bump = (s: RequestStore, who: string) =>
      s.withLock('counter', async (put) => {
        const cur = (await s.get('counter'))!;
        await sleep(2);
        await put({ ...cur, approvals: [...cur.approvals, { approver: who, at: '', comment: null }] });
      });
    await Promise.all(Array.from({ length: 20 }, (_, i) => bump(i % 2 ? s1 : s2, `a${i}`)));
    expect((await s1.get('counter'))!.approvals).toHaveLength(20);
  });

  it('fences a holder whose lock expired: its late write is refused, the next holder wins', async () => {
    const s = await open({ lockTtlMs: 100 });
    await s.put(request('fenced'));
    const slow = s.withLock('fenced', async (put) => {
      await sleep(250); // outlives the lock
      await put(request('fenced', { comment: 'stale writer' }));
    });
    await sleep(150);
    await s.withLock('fenced', async (put) => put(request('fenced', { comment: 'second holder' })));
    await expect(slow).rejects.toThrow(/PAMGATE_LOCK_LOST/);
    expect((await s.get('fenced'))!.comment).toBe('second holder');
  });

  it('answers a busy lock with an error after lockWaitMs instead of waiting forever', async () => {
    const s = await open({ lockWaitMs: 100 });
    let release!: () => void;
    const holder = s.withLock('busy', () => new Promise<void>((r) => (release = r)));
    await sleep(20);
    const started = Date.now();
    await expect(s.withLock('busy', async () => undefined)).rejects.toThrow(/lock stayed busy/);
    expect(Date.now() - started).toBeLessThan(1_000);
    release();
    await holder;
  });
});

describe('the in-memory view never moves backwards', () => {
  it('a late read of an approved copy cannot undo a revocation seen first', async () => {
    const s = await open();
    const audit = { append: async () => undefined };
    const svc = new AccessService(s, audit, () => { throw new Error('no policies needed'); });
    const approved = request('late', { status: 'approved', approvals: [{ approver: 'a', at: '', comment: null }], approvedAt: new Date().toISOString(), expiresAt: new Date(Date.now() + 3_600_000).toISOString() });
    await s.put(approved);
    await svc.refresh('late');
    expect(svc.grantsOf('xena@contoso.com')).toHaveLength(1);
    await s.put({ ...approved, status: 'revoked' });
    await svc.refresh('late');
    expect(svc.grantsOf('xena@contoso.com')).toHaveLength(0);
    // A slow reader that fetched the approved copy earlier delivers it now: ignored.
    svc.replace([approved]);
    expect(svc.grantsOf('xena@contoso.com')).toHaveLength(0);
    await s.put(approved); // even the store going backwards (e.g. restored from an older backup)
    await svc.refresh('late');
    expect(svc.grantsOf('xena@contoso.com')).toHaveLength(0);
  });

  it('StoreSync follows commits made through another store instance, announced or not', async () => {
    const writer = await open();
    const reader = await open();
    const audit = { append: async () => undefined };
    const svc = new AccessService(reader, audit, () => { throw new Error('no policies needed'); });
    const sync = new StoreSync(reader.changes, svc, { log, intervalMs: 50, staleMs: 200 });
    await sync.start();
    try {
      expect(sync.fresh()).toBe(true);
      await writer.put(request('followed'));
      await until('the reader to learn of it', () => svc.knows('followed'), 1_000, 5);
    } finally {
      await sync.stop();
    }
    await sleep(300);
    expect(sync.fresh()).toBe(false); // stopped syncing: no longer trusted
  });
});
