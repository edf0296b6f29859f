import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyAuditFile } from '../../src/audit/verify.js';
import { api } from '../helpers/http.js';
import { startUpstreamProcess, type CountingUpstream } from '../helpers/upstream.js';
import { auditEvents, call, grantJournal, readyz, tok } from './helpers/flows.js';
import { switchableFs } from './helpers/faulty-fs.js';
import { startStateGateway, type InProcGateway } from './helpers/inproc.js';
import { STATE_POLICIES } from './helpers/policies.js';

let upstream: CountingUpstream;
beforeAll(async () => {
  upstream = await startUpstreamProcess();
});
afterAll(async () => {
  await upstream?.stop();
});

describe.each([
  ['disk full (ENOSPC on write)', 'ENOSPC'],
  ['I/O error (EIO on write and fsync)', 'EIO'],
  ['read-only file system (EROFS on write)', 'EROFS'],
] as const)('audit file unwritable: %s', (_name, code) => {
  let gw: InProcGateway;
  const disk = switchableFs();

  beforeAll(async () => {
    gw = await startStateGateway({ policies: STATE_POLICIES, upstreamUrl: upstream.url, auditFs: disk.fs });
  });
  afterAll(async () => {
    disk.fail(null);
    await gw?.close();
    if (gw) await rm(gw.dataDir, { recursive: true, force: true });
  });

  it('gated tasks answer 503 and never reach the upstream, ungated traffic flows, /readyz fails; all recover without a restart', async () => {
    await grantJournal('olga@contoso.com', gw.controlUrl, gw.controlUrl);
    expect(await call(gw.proxyUrl, 'olga@contoso.com', 'New-JournalRule')).toBe(200);
    expect(await readyz(gw.controlUrl)).toBe(200);
    const executedBefore = (await auditEvents(gw.dataDir, 'task.executed')).length;

    disk.fail(code);
    const gatedBefore = await upstream.count('New-JournalRule');
    const ungatedBefore = await upstream.count('Get-Mailbox');
    for (let i = 0; i < 5; i++) {
      const r = await call(gw.proxyUrl, 'olga@contoso.com', 'New-JournalRule');
      expect(r).toBe(503);
      expect(await call(gw.proxyUrl, 'nobody@contoso.com', 'New-JournalRule')).toBe(503); // even a block must be recorded first
      expect(await call(gw.proxyUrl, 'olga@contoso.com', 'Get-Mailbox')).toBe(200);
    }
    expect(await readyz(gw.controlUrl)).toBe(503);
    expect(await readyz(gw.controlUrl)).toBe(503); // the probe really writes: a full disk stays unready
    const create = await api(gw.controlUrl, 'POST', '/api/requests', await tok('pia@contoso.com'), { task: 'New-JournalRule', reason: 'x' });
    expect(create.status).toBe(503);
    expect(await upstream.count('New-JournalRule')).toBe(gatedBefore);
    expect(await upstream.count('Get-Mailbox')).toBe(ungatedBefore + 5);

    disk.fail(null);
    expect(await readyz(gw.controlUrl)).toBe(200);
    expect(await call(gw.proxyUrl, 'olga@contoso.com', 'New-JournalRule')).toBe(200);
    expect(await upstream.count('New-JournalRule')).toBe(gatedBefore + 1);
    const created = await api(gw.controlUrl, 'POST', '/api/requests', await tok('pia@contoso.com'), { task: 'New-JournalRule', reason: 'x' });
    expect(created.status).toBe(201);

    // Nothing half-written: the chain is intact and holds exactly the executions that were forwarded.
    expect(await verifyAuditFile(gw.audit.path)).toEqual(expect.objectContaining({ ok: true }));
    expect((await auditEvents(gw.dataDir, 'task.executed')).length).toBe(executedBefore + 1);
  });
});
