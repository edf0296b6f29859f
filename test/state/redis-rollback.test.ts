import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AccessRequest } from '../../src/grants/model.js';
import { openRedisStore } from '../../src/grants/redis-store.js';
import { tempDir } from '../helpers/gateway.js';
import { api } from '../helpers/http.js';
import { auditEvents, call, decide, grantJournal, readyz, requestAccess, tok } from './helpers/flows.js';
import { STATE_POLICIES } from './helpers/policies.js';
import { killAllGateways, spawnGateway, type GatewayProcess } from './helpers/process.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { useUpstream } from './helpers/suite.js';
import { until } from './helpers/wait.js';

// Redis restarted from an older snapshot (RDB, AOF everysec) or a lagging replica keeps its epoch
// key but goes back in its history: versions the instances followed are gone or reused.

const upstreamOf = useUpstream();

let redis: TestRedis;
let config: string;
type Instance = GatewayProcess & { dataDir: string };
let a: Instance;
let b: Instance;

async function gateway(): Promise<Instance> {
  const dataDir = await tempDir();
  return Object.assign(await spawnGateway({ dataDir, configPath: config, upstreamUrl: upstreamOf().url, storeUrl: redis.url }), { dataDir });
}

beforeEach(async () => {
  redis = await startRedis({ persistence: 'snapshot' });
  const cfgDir = await tempDir('pamgate-cfg-');
  config = join(cfgDir, 'policies.yaml');
  await writeFile(config, STATE_POLICIES);
  [a, b] = await Promise.all([gateway(), gateway()]);
});
afterEach(async () => {
  b?.child.kill('SIGCONT');
  await killAllGateways();
  await redis?.stop();
});

async function version(): Promise<number> {
  const m = /^\$\d+\r\n(\d+)\r\n/.exec(await redis.command('GET', 'pamgate:version'));
  if (!m) throw new Error('no pamgate:version in Redis');
  return Number(m[1]);
}

/** Whether `user` sees request `id` on the gateway at `controlUrl` (it has synced that far). */
async function knows(controlUrl: string, user: string, id: string): Promise<boolean> {
  return (await api(controlUrl, 'GET', `/api/requests/${id}`, await tok(user))).status === 200;
}

/** kill -9, then start again from what the last SAVE wrote. */
async function crashRedis(): Promise<void> {
  await redis.kill();
  await redis.start();
}

/** The revoke from the report: B is frozen (SIGSTOP) while Redis goes back and A revokes, so B's first look afterwards is at the rolled-back history. */
async function revokeWhileBFrozen(extraCommitsAfterRevoke: number): Promise<void> {
  const id = await grantJournal('gus@contoso.com', a.controlUrl, a.controlUrl);
  await until('B to honour the grant', async () => (await call(b.proxyUrl, 'gus@contoso.com', 'New-JournalRule')) === 200, 2_000);
  const saved = await version();
  expect(await redis.command('SAVE')).toMatch(/^\+OK/);
  // Three more commits that B follows, then lost with the crash.
  const later: string[] = [];
  for (let i = 0; i < 3; i++) later.push(await requestAccess(a.controlUrl, `later${i}@contoso.com`, 'Remove-Mailbox'));
  await until('B to follow them', async () => knows(b.controlUrl, 'later2@contoso.com', later[2]!), 2_000);
  const followed = await version();
  expect(followed).toBe(saved + 3);

  b.child.kill('SIGSTOP');
  await crashRedis();
  expect(await version()).toBe(saved);
  await until('A ready again', async () => (await readyz(a.controlUrl)) === 200, 5_000, 50);
  expect((await decide(a.controlUrl, 'revoke', 'alice@contoso.com', id)).status).toBe(200);
  for (let i = 0; i < extraCommitsAfterRevoke; i++) await requestAccess(a.controlUrl, `again${i}@contoso.com`, 'Remove-Mailbox');
  expect(await version()).toBe(saved + 1 + extraCommitsAfterRevoke);
  b.child.kill('SIGCONT');

  // B must learn of the revocation like any other: within the bound once it is back in touch.
  await until('B to refuse the revoked grant', async () => (await call(b.proxyUrl, 'gus@contoso.com', 'New-JournalRule')) === 403, 4_000, 25);
  // And it stays refused (no later sync brings it back), on both instances, with B ready.
  await until('B ready', async () => (await readyz(b.controlUrl)) === 200, 3_000, 50);
  const before = await upstreamOf().count('New-JournalRule');
  for (let i = 0; i < 5; i++) {
    expect(await call(b.proxyUrl, 'gus@contoso.com', 'New-JournalRule')).toBe(403);
    expect(await call(a.proxyUrl, 'gus@contoso.com', 'New-JournalRule')).toBe(403);
  }
  expect(await upstreamOf().count('New-JournalRule')).toBe(before);
  expect(b.logs.some((l) => l.includes('went back in its history'))).toBe(true);
}

describe('Redis restored from an older snapshot', () => {
  it('the version goes down: a revocation committed afterwards still reaches the other instance', async () => {
    await revokeWhileBFrozen(0);
  });

  it('the version catches up again (same number, different commits): still detected, still refused', async () => {
    // Revoke plus two more commits bring Redis back to exactly the version B had followed.
    await revokeWhileBFrozen(2);
  });

  it('a grant whose approval was lost is dropped everywhere; a revocation that was lost is kept and written back', async () => {
    const lost = await requestAccess(a.controlUrl, 'hal@contoso.com', 'New-JournalRule'); // pending in the snapshot
    const ended = await grantJournal('ida@contoso.com', a.controlUrl, a.controlUrl); // approved in the snapshot
    expect(await redis.command('SAVE')).toMatch(/^\+OK/);
    expect((await decide(b.controlUrl, 'approve', 'bob@contoso.com', lost)).status).toBe(200);
    expect((await decide(b.controlUrl, 'revoke', 'bob@contoso.com', ended)).status).toBe(200);
    await until('A to honour the approval and the revocation', async () =>
      (await call(a.proxyUrl, 'hal@contoso.com', 'New-JournalRule')) === 200 && (await call(a.proxyUrl, 'ida@contoso.com', 'New-JournalRule')) === 403, 2_000);

    await crashRedis();
    // The store is the truth for what it still has: hal's approval is gone, so is his grant.
    for (const gw of [a, b]) {
      await until('the lost approval to stop counting', async () => (await readyz(gw.controlUrl)) === 200 && (await call(gw.proxyUrl, 'hal@contoso.com', 'New-JournalRule')) === 403, 5_000, 25);
      const r = await api(gw.controlUrl, 'GET', `/api/requests/${lost}`, await tok('hal@contoso.com'));
      expect(r.body.status).toBe('pending');
    }
    // ida's revocation was seen: it is not undone, and it goes back into Redis for everyone.
    for (const gw of [a, b]) expect(await call(gw.proxyUrl, 'ida@contoso.com', 'New-JournalRule')).toBe(403);
    await until('Redis to hold the revocation again', async () => /\\?"status\\?":\\?"revoked/.test(await redis.command('GET', `pamgate:req:${ended}`)), 5_000, 50);
    const c = await gateway(); // started after the loss: knows only what Redis has
    expect(await call(c.proxyUrl, 'ida@contoso.com', 'New-JournalRule')).toBe(403);
    const r = await api(c.controlUrl, 'GET', `/api/requests/${ended}`, await tok('ida@contoso.com'));
    expect(r.body.status).toBe('revoked');
    const reasserted = [...(await auditEvents(a.dataDir, 'request.reasserted')), ...(await auditEvents(b.dataDir, 'request.reasserted'))];
    expect(reasserted).toEqual([expect.objectContaining({ requestId: ended, status: 'revoked', storeStatus: 'approved' })]);
  });
});

describe('the change feed after a step back (store level)', () => {
  const request = (id: string): AccessRequest => ({
    id, requester: 'kit@contoso.com', task: 'new-journalrule', role: null, tasks: ['new-journalrule'], policy: 'journal-rules',
    approverGroup: 'pam-approvers', approvalsRequired: 1, reason: 'r', ticket: null, parameters: null, durationHours: 1,
    status: 'pending', createdAt: new Date().toISOString(), pendingExpiresAt: new Date(Date.now() + 3_600_000).toISOString(),
    approvals: [], approvedAt: null, expiresAt: null, decidedBy: null, decidedAt: null, comment: null,
  });

  it('a commit made here and lost before this instance followed the feed past it is noticed', async () => {
    const s = await openRedisStore(redis.url, { log: pino({ level: 'silent' }) });
    try {
      await s.put(request('kept'));
      const at = await s.changes.since(0);
      expect(at.intact).toBe(true);
      expect(await redis.command('SAVE')).toMatch(/^\+OK/);
      await s.put(request('lost')); // ours, not yet followed: the reader is still at `at`
      expect((await s.changes.since(at.version, at.head)).intact).toBe(true);

      await crashRedis();
      await until('the store to reconnect', () => s.ping(), 5_000, 50);
      // Everything the reader followed is still there, but our own later commit is gone.
      const after = await s.changes.since(at.version, at.head);
      expect(after).toMatchObject({ version: at.version, intact: false });
      // A full read takes Redis as it is; from there on the feed is consistent again.
      const snap = await s.changes.snapshot();
      expect(snap.requests.map((r) => r.id)).toEqual(['kept']);
      expect((await s.changes.since(snap.version, snap.head)).intact).toBe(true);
      await s.put(request('next'));
      const next = await s.changes.since(snap.version, snap.head);
      expect(next).toMatchObject({ intact: true, ids: ['next'], version: snap.version + 1 });
    } finally {
      await s.close();
    }
  });
});
