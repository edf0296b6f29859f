import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { verifyAuditFile } from '../../src/audit/verify.js';
import { tempDir } from '../helpers/gateway.js';
import { invoke } from '../helpers/http.js';
import { auditEvents, requestAccess, tok } from './helpers/flows.js';
import { startStateGateway } from './helpers/inproc.js';
import { STATE_POLICIES } from './helpers/policies.js';
import { killAllGateways, spawnGateway } from './helpers/process.js';
import { startSlowUpstream } from './helpers/slow-upstream.js';
import { until } from './helpers/wait.js';

const dirs: string[] = [];
const closers: Array<() => Promise<void>> = [];
afterAll(async () => {
  await killAllGateways();
  await Promise.all(closers.map((c) => c()));
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe('SIGTERM', () => {
  it('drains in-flight requests, flushes the audit, exits 0, and takes no new work', async () => {
    const upstream = await startSlowUpstream(700);
    closers.push(upstream.close);
    const dataDir = await tempDir();
    dirs.push(dataDir);
    const config = join(dataDir, 'policies.yaml');
    await writeFile(config, STATE_POLICIES);
    const gw = await spawnGateway({ dataDir, configPath: config, upstreamUrl: upstream.url });
    await requestAccess(gw.controlUrl, 'tom@contoso.com', 'Search-Mailbox'); // auto-approved
    const t = await tok('tom@contoso.com');

    const inflight = [
      ...Array.from({ length: 4 }, () => invoke(gw.proxyUrl, 'Search-Mailbox', { Identity: 'x' }, t)),
      ...Array.from({ length: 4 }, () => invoke(gw.proxyUrl, 'Get-Mailbox', {}, t)),
    ];
    await until('all 8 to reach the upstream', () => upstream.arrived() === 8, 3_000, 10);
    const exit = gw.term();
    // While it drains, a new connection is refused: nothing new gets in.
    await until('the listener to close', async () => {
      try {
        await fetch(`${gw.proxyUrl}/adminapi/beta/t/InvokeCommand`, { method: 'POST', body: '{}' });
        return false;
      } catch {
        return true;
      }
    }, 1_000, 10);
    expect(upstream.arrived()).toBe(8);

    const replies = await Promise.all(inflight);
    expect(replies.map((r) => r.status)).toEqual(Array(8).fill(200));
    expect(await exit).toBe(0);
    expect(upstream.answered()).toBe(8);
    await expect(fetch(`${gw.controlUrl}/healthz`)).rejects.toThrow();

    // Flushed and closed cleanly: the chain verifies and holds every forwarded gated call.
    expect(await verifyAuditFile(join(dataDir, 'audit.jsonl'))).toMatchObject({ ok: true });
    expect((await auditEvents(dataDir, 'task.executed')).filter((e) => e['actor'] === 'tom@contoso.com')).toHaveLength(4);
    expect(gw.stderr()).not.toMatch(/shutdown failed/);
  });

  it('bounds the drain: a request the upstream never answers is cut after drainMs', async () => {
    const upstream = await startSlowUpstream(null);
    closers.push(upstream.close);
    const gw = await startStateGateway({ policies: STATE_POLICIES, upstreamUrl: upstream.url, drainMs: 300 });
    dirs.push(gw.dataDir);
    const hanging = invoke(gw.proxyUrl, 'Get-Mailbox', {}, await tok('uma@contoso.com')).catch((err: unknown) => err);
    await until('the call to reach the upstream', () => upstream.arrived() === 1, 3_000, 10);
    const started = Date.now();
    await gw.close();
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(250);
    expect(took).toBeLessThan(2_000);
    expect(await hanging).toBeInstanceOf(Error);
  });
});
