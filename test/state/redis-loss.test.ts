import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/gateway.js';
import { api } from '../helpers/http.js';
import { startUpstreamProcess, type CountingUpstream } from '../helpers/upstream.js';
import { auditEvents, call, decide, grantJournal, readyz, requestAccess, tok } from './helpers/flows.js';
import { startStateGateway, type InProcGateway } from './helpers/inproc.js';
import { STATE_POLICIES } from './helpers/policies.js';
import { killAllGateways, spawnGateway, type GatewayProcess } from './helpers/process.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { until } from './helpers/wait.js';

let redis: TestRedis;
let upstream: CountingUpstream;
const dirs: string[] = [];

beforeAll(async () => {
  [redis, upstream] = await Promise.all([startRedis(), startUpstreamProcess()]);
});
afterAll(async () => {
  await killAllGateways();
  await Promise.all([redis?.stop(), upstream?.stop()]);
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe('Redis loss (gateway process)', () => {
  let gw: GatewayProcess;
  let dataDir: string;

  beforeAll(async () => {
    dataDir = await tempDir();
    dirs.push(dataDir);
    const config = join(dataDir, 'policies.yaml');
    await writeFile(config, STATE_POLICIES);
    gw = await spawnGateway({ dataDir, configPath: config, upstreamUrl: upstream.url, storeUrl: redis.url });
  });

  it('fails closed while Redis is down: gated 503 and never forwarded, ungated forwarded, /readyz failing; recovers when it returns', async () => {
    await grantJournal('jack@contoso.com', gw.controlUrl, gw.controlUrl);
    expect(await call(gw.proxyUrl, 'jack@contoso.com', 'New-JournalRule')).toBe(200);
    expect(await readyz(gw.controlUrl)).toBe(200);

    const ungatedBefore = await upstream.count('Get-Mailbox');
    await redis.kill();
    const killedAt = Date.now();
    // Held grants stop counting within the bound: at once when the client sees the connection
    // drop, at most 1 s (the staleness bound) when Redis hangs without dropping it.
    await until('gated calls to fail closed', async () => (await call(gw.proxyUrl, 'jack@contoso.com', 'New-JournalRule')) === 503, 2_000, 5);
    expect(Date.now() - killedAt).toBeLessThan(1_000);
    const gatedAtFault = await upstream.count('New-JournalRule');

    for (let i = 0; i < 5; i++) {
      expect(await call(gw.proxyUrl, 'jack@contoso.com', 'New-JournalRule')).toBe(503);
      expect(await call(gw.proxyUrl, 'nobody@contoso.com', 'New-JournalRule')).toBe(503);
      expect(await call(gw.proxyUrl, 'jack@contoso.com', 'Get-Mailbox')).toBe(200);
    }
    expect(await readyz(gw.controlUrl)).toBe(503);
    const create = await api(gw.controlUrl, 'POST', '/api/requests', await tok('kim@contoso.com'), { task: 'New-JournalRule', reason: 'x' });
    expect(create.status).toBe(503);
    // Nothing gated reached the upstream while the fault lasted; ungated traffic did.
    expect(await upstream.count('New-JournalRule')).toBe(gatedAtFault);
    expect(await upstream.count('Get-Mailbox')).toBe(ungatedBefore + 5);

    await redis.start();
    await until('readiness after Redis returns', async () => (await readyz(gw.controlUrl)) === 200, 5_000, 50);
    expect(await call(gw.proxyUrl, 'jack@contoso.com', 'New-JournalRule')).toBe(200);
    expect(await upstream.count('New-JournalRule')).toBe(gatedAtFault + 1);
    // The refusals are on record as blocks with status 503.
    const refused = (await auditEvents(dataDir, 'task.blocked')).filter((e) => e['status'] === 503);
    expect(refused.length).toBeGreaterThanOrEqual(10);
    expect(refused.some((e) => e['wouldBe'] === 'task.executed' && e['actor'] === 'jack@contoso.com')).toBe(true);
  });
});

describe('a hung Redis (connection open, no answers)', () => {
  let gw: InProcGateway;
  beforeAll(async () => {
    await redis.start();
    gw = await startStateGateway({ policies: STATE_POLICIES, upstreamUrl: upstream.url, storeUrl: redis.url });
    dirs.push(gw.dataDir);
  });
  afterAll(async () => {
    redis.resume();
    await gw?.close();
  });

  it('fails closed once the last good sync is older than the 1 s bound, and recovers', async () => {
    await until('ready', async () => (await readyz(gw.controlUrl)) === 200, 3_000);
    await grantJournal('nina@contoso.com', gw.controlUrl, gw.controlUrl);
    expect(await call(gw.proxyUrl, 'nina@contoso.com', 'New-JournalRule')).toBe(200);
    const before = await upstream.count('New-JournalRule');
    redis.pause();
    const pausedAt = Date.now();
    await until('gated calls to fail closed', async () => (await call(gw.proxyUrl, 'nina@contoso.com', 'New-JournalRule')) === 503, 2_500, 10);
    const detectedAfter = Date.now() - pausedAt;
    expect(detectedAfter).toBeLessThan(1_250); // bound 1 s, plus one poll period of slack
    const atFault = await upstream.count('New-JournalRule');
    expect(atFault - before).toBeLessThanOrEqual(Math.ceil(detectedAfter / 10) + 1);
    for (let i = 0; i < 5; i++) expect(await call(gw.proxyUrl, 'nina@contoso.com', 'New-JournalRule')).toBe(503);
    expect(await call(gw.proxyUrl, 'nina@contoso.com', 'Get-Mailbox')).toBe(200);
    expect(await readyz(gw.controlUrl)).toBe(503);
    // The control API answers (503) instead of hanging on the stalled connection.
    const started = Date.now();
    const create = await api(gw.controlUrl, 'POST', '/api/requests', await tok('nina@contoso.com'), { task: 'Remove-Mailbox', reason: 'x' });
    expect(create.status).toBe(503);
    expect(Date.now() - started).toBeLessThan(6_000);
    expect(await upstream.count('New-JournalRule')).toBe(atFault);
    redis.resume();
    await until('recovery', async () => (await call(gw.proxyUrl, 'nina@contoso.com', 'New-JournalRule')) === 200, 3_000, 20);
  });
});

describe('staleness bound without pub/sub', () => {
  let a: InProcGateway;
  let b: InProcGateway;

  beforeAll(async () => {
    await redis.start(); // in case an earlier test left it down
    // B never hears announcements: only its poll (200 ms) can bring the revocation.
    a = await startStateGateway({ policies: STATE_POLICIES, upstreamUrl: upstream.url, storeUrl: redis.url });
    b = await startStateGateway({ policies: STATE_POLICIES, upstreamUrl: upstream.url, storeUrl: redis.url, sync: { pubsub: false } });
    dirs.push(a.dataDir, b.dataDir);
  });
  afterAll(async () => {
    await Promise.all([a?.close(), b?.close()]);
  });

  it('a revocation still reaches the other instance within 1 s by polling', async () => {
    await until('B ready', async () => (await readyz(b.controlUrl)) === 200, 3_000);
    const id = await grantJournal('lena@contoso.com', a.controlUrl, a.controlUrl);
    await until('B to honour the grant', async () => (await call(b.proxyUrl, 'lena@contoso.com', 'New-JournalRule')) === 200, 1_000);
    expect((await decide(a.controlUrl, 'revoke', 'alice@contoso.com', id)).status).toBe(200);
    const at = Date.now();
    let status = 200;
    while (status === 200 && Date.now() - at < 2_000) status = await call(b.proxyUrl, 'lena@contoso.com', 'New-JournalRule');
    expect(status).toBe(403);
    expect(Date.now() - at).toBeLessThan(1_000);
  });

  it('a Redis that lost its data (new epoch) makes every instance drop what it knew: fail closed', async () => {
    await grantJournal('mia@contoso.com', a.controlUrl, a.controlUrl);
    await until('B to honour the grant', async () => (await call(b.proxyUrl, 'mia@contoso.com', 'New-JournalRule')) === 200, 1_000);
    expect(await redis.command('FLUSHALL')).toMatch(/^\+OK/);
    await until('both to drop the vanished grant', async () =>
      (await call(a.proxyUrl, 'mia@contoso.com', 'New-JournalRule')) === 403 && (await call(b.proxyUrl, 'mia@contoso.com', 'New-JournalRule')) === 403, 1_500, 50);
    // And they keep working on the fresh history.
    const id = await requestAccess(b.controlUrl, 'mia@contoso.com', 'New-JournalRule');
    expect((await decide(a.controlUrl, 'approve', 'bob@contoso.com', id)).status).toBe(200);
    await until('B to honour the new grant', async () => (await call(b.proxyUrl, 'mia@contoso.com', 'New-JournalRule')) === 200, 1_000);
  });
});
