import { readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, type Reply } from '../helpers/http.js';
import { startUpstreamProcess, type CountingUpstream } from '../helpers/upstream.js';
import { token } from '../helpers/tokens.js';
import { auditEvents } from './helpers/flows.js';
import { TestClock } from '../helpers/gateway.js';
import { startStateGateway, type InProcGateway } from './helpers/inproc.js';
import { startRedis, type TestRedis } from './helpers/redis.js';
import { until } from './helpers/wait.js';

/** One user's state must stay bounded whatever they send: caps on each field, a creation rate, retention of closed requests. */

const POLICIES = (settings: string): string => `
version: 1
settings:
  defaultApproverGroup: pam-approvers
  adminGroup: pam-admins
${settings}
identity:
  jwt:
    secret: \${PAMGATE_JWT_SECRET}
groups:
  pam-approvers: [alice@contoso.com, bob@contoso.com]
  pam-admins: [root@contoso.com]
policies:
  - id: journal-rules
    task: New-JournalRule
  - id: mailbox-permissions
    task: Add-MailboxPermission
    parameters:
      AccessRights: { oneOf: [ReadPermission] }
      Identity: { pattern: '^[^@]+@contoso\\.com$' }
`;

let upstream: CountingUpstream;
const dirs: string[] = [];
beforeAll(async () => {
  upstream = await startUpstreamProcess();
});
afterAll(async () => {
  await upstream?.stop();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

// Tokens valid for two days: the tests move the gateway's clock.
const tokens = new Map<string, Promise<string>>();
const tok = (user: string): Promise<string> => {
  let t = tokens.get(user);
  if (!t) tokens.set(user, (t = token(user, { expiresInSeconds: 48 * 3600 })));
  return t;
};
const create = async (gw: InProcGateway, user: string, body: Record<string, unknown>): Promise<Reply> => api(gw.controlUrl, 'POST', '/api/requests', await tok(user), body);
const cancel = async (gw: InProcGateway, user: string, id: string): Promise<Reply> => api(gw.controlUrl, 'POST', `/api/requests/${id}/cancel`, await tok(user));
const mine = async (gw: InProcGateway, user: string): Promise<Array<{ id: string; status: string }>> => (await api(gw.controlUrl, 'GET', '/api/requests', await tok(user))).body;

/** Eight parameters no rule names, each as long as allowed: the most a request may carry beyond its policy's own. */
const maxExtras = (): Record<string, string> => Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`Extra${i}`, String.fromCharCode(97 + i).repeat(500)]));

describe('size caps on what a request carries', () => {
  let gw: InProcGateway;
  beforeAll(async () => {
    gw = await startStateGateway({ policies: POLICIES(''), upstreamUrl: upstream.url });
    dirs.push(gw.dataDir);
  });
  afterAll(async () => {
    await gw?.close();
  });

  const refused = (r: Reply, field: string, limit: RegExp): void => {
    expect(r.status, JSON.stringify(r.body).slice(0, 300)).toBe(400);
    expect(r.body.error.field).toBe(field);
    expect(r.body.error.message).toMatch(limit);
  };

  it('refuses a reason, ticket or comment over its limit, naming the field and the limit', async () => {
    refused(await create(gw, 'big@contoso.com', { task: 'New-JournalRule', reason: 'r'.repeat(1001) }), 'reason', /reason.*1000 characters/);
    refused(await create(gw, 'big@contoso.com', { task: 'New-JournalRule', reason: 'ok', ticket: 't'.repeat(201) }), 'ticket', /ticket.*200 characters/);
    const ok = await create(gw, 'big@contoso.com', { task: 'New-JournalRule', reason: 'r'.repeat(1000), ticket: 't'.repeat(200) });
    expect(ok.status, JSON.stringify(ok.body).slice(0, 300)).toBe(201);
    refused(await api(gw.controlUrl, 'POST', `/api/requests/${ok.body.id}/deny`, await tok('alice@contoso.com'), { comment: 'c'.repeat(1001) }), 'comment', /comment.*1000 characters/);
    expect((await api(gw.controlUrl, 'POST', `/api/requests/${ok.body.id}/deny`, await tok('alice@contoso.com'), { comment: 'c'.repeat(1000) })).status).toBe(200);
  });

  it('lets a request scope the parameters its policy names plus at most 8 others, each value at most 500 characters', async () => {
    // The attack of record: 58 unrelated 1,000-character parameters.
    const flood = Object.fromEntries(Array.from({ length: 58 }, (_, i) => [`P${i}`, 'x'.repeat(1000)]));
    refused(await create(gw, 'big@contoso.com', { task: 'New-JournalRule', reason: 'ok', parameters: flood }), 'parameters.P0', /parameters\.P0: at most 500 characters/);
    const many = Object.fromEntries(Array.from({ length: 58 }, (_, i) => [`P${i}`, 'x']));
    refused(await create(gw, 'big@contoso.com', { task: 'New-JournalRule', reason: 'ok', parameters: many }), 'parameters', /at most 8 parameters.*no rule/);
    refused(await create(gw, 'big@contoso.com', { task: 'New-JournalRule', reason: 'ok', parameters: { ...maxExtras(), Extra8: 'i' } }), 'parameters', /at most 8 parameters.*"journal-rules".*9/);
    refused(await create(gw, 'big@contoso.com', { task: 'New-JournalRule', reason: 'ok', parameters: { Name: 'n'.repeat(501) } }), 'parameters.Name', /500 characters/);

    // The policy's own two, plus eight others: accepted.
    const scoped = await create(gw, 'big@contoso.com', { task: 'Add-MailboxPermission', reason: 'ok', parameters: { AccessRights: 'ReadPermission', Identity: 'x@contoso.com', ...maxExtras() } });
    expect(scoped.status, JSON.stringify(scoped.body).slice(0, 300)).toBe(201);
    expect(Object.keys(scoped.body.parameters)).toHaveLength(10);
  });

  it('review says from when on ended grants are still held (older periods: the audit file)', async () => {
    const r = await api(gw.controlUrl, 'GET', '/api/review', await tok('root@contoso.com'));
    expect(r.status).toBe(200);
    expect(r.body.retainedFrom).toBe(new Date(gw.clock.ms - 30 * 86_400_000).toISOString());
  });
});

describe('request creation is rate-limited per user', () => {
  let gw: InProcGateway;
  beforeAll(async () => {
    gw = await startStateGateway({ policies: POLICIES(''), upstreamUrl: upstream.url });
    dirs.push(gw.dataDir);
  });
  afterAll(async () => {
    await gw?.close();
  });

  it('takes a burst of 10, then answers 429 with Retry-After until a token is back (60 an hour); other users are unaffected', async () => {
    for (let i = 0; i < 10; i++) {
      const r = await create(gw, 'looper@contoso.com', { task: 'New-JournalRule', reason: 'burst' });
      expect(r.status, JSON.stringify(r.body).slice(0, 300)).toBe(201);
      expect((await cancel(gw, 'looper@contoso.com', r.body.id)).status).toBe(200); // never near the pending cap
    }
    const res = await fetch(`${gw.controlUrl}/api/requests`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await tok('looper@contoso.com')}`, 'content-type': 'application/json' },
      body: JSON.stringify({ task: 'New-JournalRule', reason: 'one too many' }),
    });
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toBe('60');
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe('TooManyRequests');
    expect(body.error.message).toMatch(/10 .*60 an hour.*60 s/);
    expect((await mine(gw, 'looper@contoso.com')).length).toBe(10); // the refusal created nothing

    expect((await create(gw, 'bystander@contoso.com', { task: 'New-JournalRule', reason: 'mine' })).status).toBe(201);
    // A refusal for bad input does not spend a token.
    gw.clock.ms += 30_000;
    expect((await create(gw, 'looper@contoso.com', { task: 'New-JournalRule', reason: 'x', ticket: 't'.repeat(201) })).status).toBe(400);
    expect((await create(gw, 'looper@contoso.com', { task: 'New-JournalRule', reason: 'half a minute' })).status).toBe(429);
    gw.clock.ms += 30_000;
    expect((await create(gw, 'looper@contoso.com', { task: 'New-JournalRule', reason: 'a minute later' })).status).toBe(201);
    expect((await create(gw, 'looper@contoso.com', { task: 'New-JournalRule', reason: 'again' })).status).toBe(429);
  });
});

describe('closed requests are pruned after the retention period', () => {
  const RETENTION_SECONDS = 10;
  // A generous rate so one user can loop fast; a retention of 10 s on the gateway's clock.
  const SETTINGS = `  requestRateBurst: 100000\n  requestRatePerHour: 3600000\n  closedRequestRetentionDays: ${RETENTION_SECONDS / 86_400}`;
  let gw: InProcGateway;
  beforeAll(async () => {
    gw = await startStateGateway({ policies: POLICIES(SETTINGS), upstreamUrl: upstream.url });
    dirs.push(gw.dataDir);
  });
  afterAll(async () => {
    await gw?.close();
  });

  it('keeps memory and state.journal bounded while one user loops create → cancel with maximal inputs, and a restart reloads the compacted journal', async () => {
    const journal = join(gw.dataDir, 'state.journal');
    // What must survive: a pending request and an approved grant, filed before the loop.
    const pending = await create(gw, 'keeper@contoso.com', { task: 'New-JournalRule', reason: 'stays pending' });
    const granted = await create(gw, 'keeper@contoso.com', { task: 'New-JournalRule', reason: 'gets approved' });
    expect((await api(gw.controlUrl, 'POST', `/api/requests/${granted.body.id}/approve`, await tok('alice@contoso.com'), {})).status).toBe(200);

    const maximal = { task: 'Add-MailboxPermission', reason: 'r'.repeat(1000), ticket: 't'.repeat(200), parameters: { AccessRights: 'ReadPermission', Identity: 'x@contoso.com', ...maxExtras() } };
    const oversized = { task: 'New-JournalRule', reason: 'r'.repeat(2000), parameters: Object.fromEntries(Array.from({ length: 58 }, (_, i) => [`P${i}`, 'x'.repeat(1000)])) };
    const LOOPS = 2000;
    let firstId = '';
    let held = 0;
    let biggest = 0;
    for (let i = 0; i < LOOPS; i++) {
      if (i % 10 === 0) expect((await create(gw, 'looper@contoso.com', oversized)).status).toBe(400);
      const r = await create(gw, 'looper@contoso.com', maximal);
      expect(r.status, JSON.stringify(r.body).slice(0, 300)).toBe(201);
      if (i === 0) firstId = r.body.id;
      expect((await cancel(gw, 'looper@contoso.com', r.body.id)).status).toBe(200);
      gw.clock.ms += 1_000;
      if (i % 100 === 99) {
        held = Math.max(held, (await mine(gw, 'looper@contoso.com')).length);
        biggest = Math.max(biggest, (await stat(journal)).size);
      }
    }
    // At one loop a second, a 10 s retention holds about 10 closed requests (plus those not yet pruned).
    expect(held).toBeGreaterThan(0);
    expect(held).toBeLessThanOrEqual(2 * RETENTION_SECONDS + 5);
    // Each maximal request is ~6 KB on the journal and written twice: 2,000 loops would be ~25 MB.
    // Compaction keeps the journal within twice its live data plus 1 MiB.
    expect(biggest).toBeLessThan(1.5 * 2 ** 20);
    expect((await api(gw.controlUrl, 'GET', `/api/requests/${firstId}`, await tok('looper@contoso.com'))).status).toBe(404);
    // The audit keeps the evidence of what was pruned.
    const created = await auditEvents(gw.dataDir, 'request.created');
    expect(created.some((e) => e['requestId'] === firstId)).toBe(true);
    expect((await auditEvents(gw.dataDir, 'requests.pruned')).length).toBeGreaterThan(0);

    // The requests still open are untouched by the pruning, however old they get.
    expect((await api(gw.controlUrl, 'GET', `/api/requests/${pending.body.id}`, await tok('keeper@contoso.com'))).body.status).toBe('pending');
    expect((await api(gw.controlUrl, 'GET', `/api/requests/${granted.body.id}`, await tok('keeper@contoso.com'))).body.status).toBe('approved');

    // Restart on the same data dir: the compacted journal has what was open and only the recent closed ones.
    const { dataDir, configPath, clock } = gw;
    await gw.close();
    gw = await startStateGateway({ policies: '', configPath, dataDir, clock, upstreamUrl: upstream.url });
    const lines = (await readFile(journal, 'utf8')).split('\n').filter((l) => l !== '');
    expect(lines.length).toBeLessThanOrEqual(2 + 2 * RETENTION_SECONDS + 5); // compacted on open: one line per request held
    expect((await api(gw.controlUrl, 'GET', `/api/requests/${pending.body.id}`, await tok('keeper@contoso.com'))).body.status).toBe('pending');
    expect((await api(gw.controlUrl, 'GET', `/api/requests/${granted.body.id}`, await tok('keeper@contoso.com'))).body.status).toBe('approved');
    expect((await api(gw.controlUrl, 'GET', `/api/requests/${firstId}`, await tok('looper@contoso.com'))).status).toBe(404);
    const after = await mine(gw, 'looper@contoso.com');
    expect(after.length).toBeLessThanOrEqual(2 * RETENTION_SECONDS + 5);
    expect(after.every((r) => r.status === 'canceled')).toBe(true);
    // Once its grant has expired and the retention passed, the approved one goes too; the pending one expires and goes.
    gw.clock.advanceHours(25);
    expect(await gw.service.sweep()).toBe(2);
    await gw.service.prune();
    expect((await api(gw.controlUrl, 'GET', `/api/requests/${granted.body.id}`, await tok('keeper@contoso.com'))).status).toBe(404);
    expect((await api(gw.controlUrl, 'GET', `/api/requests/${pending.body.id}`, await tok('keeper@contoso.com'))).status).toBe(404);
  }, 180_000);
});

describe('with Redis, instances share the rate limit and prune the shared keys', () => {
  let redis: TestRedis;
  let a: InProcGateway;
  let b: InProcGateway;
  const clock = new TestClock();
  beforeAll(async () => {
    redis = await startRedis();
    const policies = POLICIES('  requestRateBurst: 3\n  requestRatePerHour: 60\n  closedRequestRetentionDays: 0.0001');
    [a, b] = await Promise.all([0, 1].map(() => startStateGateway({ policies, upstreamUrl: upstream.url, storeUrl: redis.url, clock })));
    dirs.push(a.dataDir, b.dataDir);
  });
  afterAll(async () => {
    await Promise.all([a?.close(), b?.close()]);
    await redis?.stop();
  });

  it('a burst spent across two instances is spent on both; a pruned request leaves no key behind and goes from both views', async () => {
    const ids: string[] = [];
    for (const gw of [a, b, a]) {
      const r = await create(gw, 'shared@contoso.com', { task: 'New-JournalRule', reason: 'shared burst' });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      ids.push(r.body.id);
      expect((await cancel(gw, 'shared@contoso.com', r.body.id)).status).toBe(200);
    }
    for (const gw of [a, b]) {
      const r = await create(gw, 'shared@contoso.com', { task: 'New-JournalRule', reason: 'one too many' });
      expect(r.status).toBe(429);
      expect(r.body.error.message).toMatch(/at most 3 at once, then 60 an hour; try again in 60 s/);
    }
    expect(await redis.command('EXISTS', 'pamgate:rate:shared@contoso.com')).toBe(':1\r\n');

    // Both instances see the three canceled requests; past the retention (8.64 s) one prune removes them from Redis.
    await until('B to see the third cancel', async () => (await mine(b, 'shared@contoso.com')).filter((r) => r.status === 'canceled').length === 3 || undefined, 2_000);
    for (const id of ids) expect(await redis.command('EXISTS', `pamgate:req:${id}`)).toBe(':1\r\n');
    clock.ms += 9_000;
    expect(await a.service.prune()).toBe(3);
    for (const id of ids) {
      expect(await redis.command('EXISTS', `pamgate:req:${id}`)).toBe(':0\r\n');
      expect(await redis.command('ZSCORE', 'pamgate:changes', id)).toBe('$-1\r\n');
    }
    expect(await mine(a, 'shared@contoso.com')).toEqual([]);
    // B prunes its own view by the same rule (the keys are already gone).
    expect(await b.service.prune()).toBe(3);
    expect(await mine(b, 'shared@contoso.com')).toEqual([]);
    // A minute on, the shared bucket has one token again, on either instance.
    clock.ms += 51_000;
    expect((await create(b, 'shared@contoso.com', { task: 'New-JournalRule', reason: 'a minute later' })).status).toBe(201);
    expect((await create(a, 'shared@contoso.com', { task: 'New-JournalRule', reason: 'again' })).status).toBe(429);
  });
});
