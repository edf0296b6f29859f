import { appendFile, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/gateway.js';
import { api } from '../helpers/http.js';
import { startUpstreamProcess, type CountingUpstream } from '../helpers/upstream.js';
import { auditEvents, call, decide, tok } from './helpers/flows.js';
import { STATE_POLICIES } from './helpers/policies.js';
import { killAllGateways, runCli, spawnGateway, type GatewayProcess } from './helpers/process.js';
import { startRedis, type TestRedis } from './helpers/redis.js';

/** What clients were told before the crash: only these are promises the gateway must keep. */
interface Received {
  executed: Map<string, number>; // actor → gated calls answered 200
  blocked: Map<string, number>; // actor → gated calls answered 403
  created: Map<string, { requester: string; status: string }>; // id → as answered
  approved: Map<string, string>; // id → approver whose approval was answered 200
}

let upstream: CountingUpstream;
let redis: TestRedis;
const dirs: string[] = [];
beforeAll(async () => {
  [upstream, redis] = await Promise.all([startUpstreamProcess(), startRedis()]);
});
afterAll(async () => {
  await killAllGateways();
  await Promise.all([upstream?.stop(), redis?.stop()]);
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

const inc = (m: Map<string, number>, k: string): void => void m.set(k, (m.get(k) ?? 0) + 1);

/** Mixed traffic from `workers` loops until `stop()`; records only answers that actually arrived. */
function load(gw: GatewayProcess, workers: number): { stop(): Promise<void>; received: Received } {
  const received: Received = { executed: new Map(), blocked: new Map(), created: new Map(), approved: new Map() };
  let running = true;
  const pending: string[] = [];
  const loop = async (w: number): Promise<void> => {
    for (let i = 0; running; i++) {
      try {
        switch ((w + i) % 6) {
          case 0: // ungated
            await call(gw.proxyUrl, 'load@contoso.com', 'Get-Mailbox');
            break;
          case 1: { // gated, held grant
            const s = await call(gw.proxyUrl, 'granted@contoso.com', 'Search-Mailbox');
            if (s === 200) inc(received.executed, 'granted@contoso.com');
            break;
          }
          case 2: { // gated, no grant
            const s = await call(gw.proxyUrl, `nogrant${w}@contoso.com`, 'Remove-Mailbox');
            if (s === 403) inc(received.blocked, `nogrant${w}@contoso.com`);
            break;
          }
          case 3: { // a request that stays pending
            const user = `req${w}-${i}@contoso.com`;
            const r = await api(gw.controlUrl, 'POST', '/api/requests', await tok(user), { task: 'New-JournalRule', reason: 'crash test' });
            if (r.status === 201) {
              received.created.set(r.body.id, { requester: user, status: r.body.status });
              if (i % 2 === 0) pending.push(r.body.id); // the others stay pending through the crash
            }
            break;
          }
          case 4: { // approve one of them
            const id = pending.shift();
            if (id === undefined) break;
            const r = await decide(gw.controlUrl, 'approve', 'alice@contoso.com', id);
            if (r.status === 200) received.approved.set(id, 'alice@contoso.com');
            break;
          }
          case 5: { // an auto-approved grant, used at once
            const user = `auto${w}-${i}@contoso.com`;
            const r = await api(gw.controlUrl, 'POST', '/api/requests', await tok(user), { task: 'Search-Mailbox', reason: 'crash test' });
            if (r.status === 201) received.created.set(r.body.id, { requester: user, status: r.body.status });
            break;
          }
        }
      } catch {
        // connection cut by the crash: the client never got an answer, so nothing was promised
      }
    }
  };
  const loops = Array.from({ length: workers }, (_, w) => loop(w));
  return {
    received,
    async stop() {
      running = false;
      await Promise.all(loops);
    },
  };
}

describe.each(['embedded', 'redis'] as const)('kill -9 under load, then restart (%s store)', (kind) => {
  it('keeps every promise made to a client, repairs a torn tail on record, and verifies', async () => {
    const dataDir = await tempDir();
    dirs.push(dataDir);
    const config = join(dataDir, 'policies.yaml');
    await writeFile(config, STATE_POLICIES);
    const storeUrl = kind === 'redis' ? redis.url : undefined;
    const gw = await spawnGateway({ dataDir, configPath: config, upstreamUrl: upstream.url, ...(storeUrl ? { storeUrl } : {}) });
    const grant = await api(gw.controlUrl, 'POST', '/api/requests', await tok('granted@contoso.com'), { task: 'Search-Mailbox', reason: 'crash test' });
    expect(grant.body.status).toBe('approved');

    const traffic = load(gw, 8);
    await new Promise((r) => setTimeout(r, 800));
    await gw.kill9();
    await traffic.stop();
    const got = traffic.received;
    // The load really was mixed and concurrent when the process died.
    expect(got.executed.get('granted@contoso.com') ?? 0).toBeGreaterThan(10);
    expect([...got.blocked.values()].reduce((a, b) => a + b, 0)).toBeGreaterThan(10);
    expect(got.created.size).toBeGreaterThan(10);
    expect(got.approved.size).toBeGreaterThan(3);

    // Power loss could also leave half a line: simulate it on top of the kill.
    await appendFile(join(dataDir, 'audit.jsonl'), '{"seq":999999,"time":"2026-');

    const again = await spawnGateway({ dataDir, configPath: config, upstreamUrl: upstream.url, ...(storeUrl ? { storeUrl } : {}) });
    // The repair is itself on record, and the whole chain verifies. What it drops ends with the torn
    // line; before it may come the lines of a batch whose durable write the kill cut short (never
    // acknowledged: the promises checked below do not include them).
    const repaired = await auditEvents(dataDir, 'audit.repaired');
    if (repaired.length === 0) {
      // Under load acknowledged lines reach audit.jsonl after the WAL, several batches at a time:
      // the kill left some of them only in audit.wal, so the torn bytes lay where those lines
      // belong, and the restart rewrote that stretch from the WAL (a damaged copy, nothing lost).
      const started = (await auditEvents(dataDir, 'gateway.started')).at(-1) as { auditRestored?: number };
      expect(started.auditRestored).toBeGreaterThan(0);
    } else {
      expect(repaired).toHaveLength(1);
      const r = repaired[0] as { dropped: string; droppedEnd?: string };
      expect((r.droppedEnd ?? r.dropped).endsWith('{"seq":999999,"time":"2026-')).toBe(true);
    }
    expect(await readFile(join(dataDir, 'audit.jsonl'), 'utf8')).not.toContain('{"seq":999999,');
    const verify = await runCli(['audit', 'verify', dataDir]);
    expect(verify.stderr).toBe('');
    expect(verify.code).toBe(0);
    expect(verify.stdout).toMatch(/^ok \d+ events/);

    // Every answered gated call has its audit event (written before the answer).
    const executed = await auditEvents(dataDir, 'task.executed');
    const blocked = await auditEvents(dataDir, 'task.blocked');
    for (const [actor, n] of got.executed) expect(executed.filter((e) => e['actor'] === actor).length).toBeGreaterThanOrEqual(n);
    for (const [actor, n] of got.blocked) expect(blocked.filter((e) => e['actor'] === actor).length).toBeGreaterThanOrEqual(n);

    // Every answered create and approval is on record and in the state after restart.
    const createdEvents = new Set((await auditEvents(dataDir, 'request.created')).map((e) => e['requestId']));
    const approvedEvents = await auditEvents(dataDir, 'request.approved');
    const stillPending: string[] = [];
    for (const [id, { requester, status }] of got.created) {
      expect(createdEvents.has(id)).toBe(true);
      const r = await api(again.controlUrl, 'GET', `/api/requests/${id}`, await tok(requester));
      expect(r.status).toBe(200);
      if (got.approved.has(id) || status === 'approved') {
        expect(r.body.status).toBe('approved');
      } else if (r.body.status === 'approved') {
        // An approval in flight at the kill may have been stored without its answer arriving;
        // then it must still be on record (the audit is written before the state).
        expect(approvedEvents.some((e) => e['requestId'] === id)).toBe(true);
      } else {
        expect(r.body.status).toBe('pending');
        stillPending.push(id);
      }
    }
    for (const [id, approver] of got.approved) {
      expect(approvedEvents.some((e) => e['requestId'] === id && e['actor'] === approver)).toBe(true);
    }

    // Grants survived: the held one and one granted during the load still open their task.
    expect(await call(again.proxyUrl, 'granted@contoso.com', 'Search-Mailbox')).toBe(200);
    const someApproved = [...got.approved.keys()][0]!;
    const holder = got.created.get(someApproved)!.requester;
    expect(await call(again.proxyUrl, holder, 'New-JournalRule')).toBe(200);
    // Pending requests survived and can still be decided.
    expect(stillPending.length).toBeGreaterThan(3);
    expect((await decide(again.controlUrl, 'approve', 'bob@contoso.com', stillPending[0]!)).status).toBe(200);

    expect(await again.term()).toBe(0);
    expect((await runCli(['audit', 'verify', join(dataDir, 'audit.jsonl')])).code).toBe(0);
  });
});
