import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/gateway.js';
import { api } from '../helpers/http.js';
import { startUpstreamProcess, type CountingUpstream } from '../helpers/upstream.js';
import { auditEvents, call, decide, grantJournal, requestAccess, tok } from './helpers/flows.js';
import { STATE_POLICIES } from './helpers/policies.js';
import { killAllGateways, spawnGateway, type GatewayProcess } from './helpers/process.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { until } from './helpers/wait.js';

// Two gateway processes, each with its own data dir (audit file), sharing one redis-server.
let redis: TestRedis;
let upstream: CountingUpstream;
let a: GatewayProcess;
let b: GatewayProcess;
const dirs: string[] = [];

beforeAll(async () => {
  [redis, upstream] = await Promise.all([startRedis(), startUpstreamProcess()]);
  const config = join(await tempDir('pamgate-cfg-'), 'policies.yaml');
  dirs.push(config.slice(0, config.lastIndexOf('/')));
  await writeFile(config, STATE_POLICIES);
  const [dirA, dirB] = await Promise.all([tempDir(), tempDir()]);
  dirs.push(dirA, dirB);
  [a, b] = await Promise.all([
    spawnGateway({ dataDir: dirA, configPath: config, upstreamUrl: upstream.url, storeUrl: redis.url }),
    spawnGateway({ dataDir: dirB, configPath: config, upstreamUrl: upstream.url, storeUrl: redis.url }),
  ]);
});

afterAll(async () => {
  await killAllGateways();
  await Promise.all([redis?.stop(), upstream?.stop()]);
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe('two instances sharing Redis', () => {
  it('both are ready, and a request made on one is visible and usable on the other', async () => {
    expect((await fetch(`${a.controlUrl}/readyz`)).status).toBe(200);
    expect((await fetch(`${b.controlUrl}/readyz`)).status).toBe(200);

    const id = await requestAccess(a.controlUrl, 'erin@contoso.com', 'New-JournalRule');
    // B lists it (approvers see the requests they may decide) and approves it.
    const listed = await until('B to list the request', async () => {
      const r = await api(b.controlUrl, 'GET', '/api/requests?status=pending', await tok('alice@contoso.com'));
      return (r.body as Array<{ id: string }>).some((x) => x.id === id) || undefined;
    }, 1_000);
    expect(listed).toBe(true);
    const approved = await decide(b.controlUrl, 'approve', 'alice@contoso.com', id);
    expect(approved.status).toBe(200);
    expect(approved.body.status).toBe('approved');

    // The grant approved on B opens the task on A (and on B).
    await until('A to honour the grant approved on B', async () => (await call(a.proxyUrl, 'erin@contoso.com', 'New-JournalRule')) === 200, 1_000);
    expect(await call(b.proxyUrl, 'erin@contoso.com', 'New-JournalRule')).toBe(200);
    const got = await api(a.controlUrl, 'GET', `/api/requests/${id}`, await tok('erin@contoso.com'));
    expect(got.body).toMatchObject({ id, status: 'approved', approvals: [{ approver: 'alice@contoso.com' }] });
  });

  it('a revocation on one instance blocks the very next call on the other within 1 s', async () => {
    const id = await grantJournal('frank@contoso.com', a.controlUrl, b.controlUrl);
    await until('B to honour the grant', async () => (await call(b.proxyUrl, 'frank@contoso.com', 'New-JournalRule')) === 200, 1_000);

    const revoked = await decide(a.controlUrl, 'revoke', 'root@contoso.com', id);
    expect(revoked.status).toBe(200);
    const revokedAt = Date.now();
    let status = 200;
    while (status === 200 && Date.now() - revokedAt < 2_000) status = await call(b.proxyUrl, 'frank@contoso.com', 'New-JournalRule');
    const blockedAfter = Date.now() - revokedAt;
    expect(status).toBe(403);
    expect(blockedAfter).toBeLessThan(1_000);

    // From then on nothing of frank's reaches the upstream, on either instance.
    const before = await upstream.count('New-JournalRule');
    for (let i = 0; i < 5; i++) {
      expect(await call(b.proxyUrl, 'frank@contoso.com', 'New-JournalRule')).toBe(403);
      expect(await call(a.proxyUrl, 'frank@contoso.com', 'New-JournalRule')).toBe(403);
    }
    expect(await upstream.count('New-JournalRule')).toBe(before);
  });

  it('two approvers approving a 2-approver request on two instances at once: two approvals, one transition', async () => {
    const ids = await Promise.all(Array.from({ length: 12 }, () => requestAccess(a.controlUrl, 'gina@contoso.com', 'Remove-Mailbox')));
    await Promise.all(ids.map(async (id) => {
      const [ra, rb] = await Promise.all([decide(a.controlUrl, 'approve', 'alice@contoso.com', id), decide(b.controlUrl, 'approve', 'bob@contoso.com', id)]);
      expect([ra.status, rb.status]).toEqual([200, 200]);
      // Exactly one of the two saw its approval complete the request.
      expect([ra.body.status, rb.body.status].sort()).toEqual(['approved', 'pending']);
      for (const g of [a, b]) {
        const r = await api(g.controlUrl, 'GET', `/api/requests/${id}`, await tok('alice@contoso.com'));
        if (r.body.status !== 'approved') continue; // the other instance may be a few ms behind; checked below
        expect(r.body.approvals.map((x: { approver: string }) => x.approver).sort()).toEqual(['alice@contoso.com', 'bob@contoso.com']);
      }
    }));
    await until('both instances to agree', async () => {
      for (const g of [a, b]) for (const id of ids) {
        const r = await api(g.controlUrl, 'GET', `/api/requests/${id}`, await tok('alice@contoso.com'));
        if (r.body.status !== 'approved' || r.body.approvals.length !== 2) return false;
      }
      return true;
    }, 1_000);
    // One request.approved per approver per request, across both audit files; none lost, none doubled.
    const approvals = [...(await auditEvents(dirs[1]!, 'request.approved')), ...(await auditEvents(dirs[2]!, 'request.approved'))].filter((e) => ids.includes(e['requestId'] as string));
    expect(approvals).toHaveLength(ids.length * 2);
    for (const id of ids) expect(approvals.filter((e) => e['requestId'] === id).map((e) => e['actor']).sort()).toEqual(['alice@contoso.com', 'bob@contoso.com']);
  });

  it('five approvers racing on a 3-of-5 request across both instances: exactly three count, two are refused', async () => {
    const id = await requestAccess(b.controlUrl, 'hank@contoso.com', 'Set-TransportConfig');
    const voters = ['q1', 'q2', 'q3', 'q4', 'q5'].map((q) => `${q}@contoso.com`);
    const replies = await Promise.all(voters.map((v, i) => decide(i % 2 === 0 ? a.controlUrl : b.controlUrl, 'approve', v, id)));
    const statuses = replies.map((r) => r.status).sort();
    expect(statuses).toEqual([200, 200, 200, 409, 409]);
    expect(replies.filter((r) => r.status === 200 && r.body.status === 'approved')).toHaveLength(1);
    const final = await api(a.controlUrl, 'GET', `/api/requests/${id}`, await tok('hank@contoso.com'));
    expect(final.body.status).toBe('approved');
    expect(final.body.approvals).toHaveLength(3);
  });

  it('the same approver on both instances at once counts once', async () => {
    const id = await requestAccess(a.controlUrl, 'ivy@contoso.com', 'Remove-Mailbox');
    const replies = await Promise.all([decide(a.controlUrl, 'approve', 'alice@contoso.com', id), decide(b.controlUrl, 'approve', 'alice@contoso.com', id)]);
    expect(replies.map((r) => r.status).sort()).toEqual([200, 409]);
    const final = await api(b.controlUrl, 'GET', `/api/requests/${id}`, await tok('ivy@contoso.com'));
    expect(final.body).toMatchObject({ status: 'pending', approvals: [{ approver: 'alice@contoso.com' }] });
  });
});
