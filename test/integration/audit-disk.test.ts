import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readAuditEvents } from '../../src/audit/search.js';
import { verifyAuditFile } from '../../src/audit/verify.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { TEST_POLICIES } from '../helpers/policies.js';
import { token } from '../helpers/tokens.js';
import { startUpstreamProcess, type CountingUpstream } from '../helpers/upstream.js';

const INVOKE = '/adminapi/beta/contoso.onmicrosoft.com/InvokeCommand';

let upstream: CountingUpstream;
let gw: TestGateway;

beforeAll(async () => {
  upstream = await startUpstreamProcess();
  gw = await startTestGateway({ policies: TEST_POLICIES, upstreamUrl: upstream.url });
});
afterAll(async () => {
  await gw?.close();
  await upstream?.stop();
});

/** Bytes the audit chain takes on disk: the live file and its rotated segments (audit.wal is preallocated, fixed size). */
async function auditBytes(dir: string): Promise<number> {
  let total = 0;
  for (const name of await readdir(dir)) if (/^audit.*\.jsonl$/.test(name)) total += (await stat(join(dir, name))).size;
  return total;
}

async function post(body: string, tok?: string): Promise<number> {
  const res = await fetch(gw.proxyUrl + INVOKE, { method: 'POST', headers: { 'content-type': 'application/json', ...(tok ? { authorization: `Bearer ${tok}` } : {}) }, body });
  await res.arrayBuffer();
  return res.status;
}

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

async function eventsAfter(seq: number): Promise<Array<Record<string, unknown>>> {
  const out: Array<Record<string, unknown>> = [];
  for await (const e of readAuditEvents(gw.audit.path)) if ((e['seq'] as number) > seq) out.push(e);
  return out;
}

async function lastSeq(): Promise<number> {
  let seq = 0;
  for await (const e of readAuditEvents(gw.audit.path)) seq = e['seq'] as number;
  return seq;
}

describe('what one refusal costs the audit disk', () => {
  it('50 unauthenticated calls with a 1 MB parameter add a few KiB each, and each event carries the body hash', async () => {
    const before = await auditBytes(gw.dataDir);
    const seq = await lastSeq();
    const body = JSON.stringify({ CmdletInput: { CmdletName: 'New-JournalRule', Parameters: { Name: 'x'.repeat(1_000_000) } } });
    for (let i = 0; i < 50; i++) expect(await post(body)).toBe(401);
    const grown = (await auditBytes(gw.dataDir)) - before;
    expect(grown).toBeLessThanOrEqual(50 * 5 * 1024);

    const events = await eventsAfter(seq);
    expect(events).toHaveLength(50);
    for (const e of events) {
      expect(e).toMatchObject({ type: 'task.blocked', task: 'New-JournalRule', policy: 'journal-rules', bodySha256: sha256(body) });
      expect(e['truncated']).toMatchObject({ values: 1 });
      const name = (e['parameters'] as Record<string, string>)['name']!;
      expect(name.startsWith('x'.repeat(256))).toBe(true);
      expect(name).toContain('[cut: 1000000 chars]');
      expect(name.length).toBeLessThan(300);
    }
    expect(await verifyAuditFile(gw.audit.path)).toMatchObject({ ok: true });
    expect(await upstream.count('New-JournalRule')).toBe(0);
  });

  it('many parameters, a huge task name and a huge user name are bounded too', async () => {
    const seq = await lastSeq();
    const before = await auditBytes(gw.dataDir);
    const params: Record<string, string> = {};
    for (let i = 0; i < 50_000; i++) params[`P${i}`] = 'v';
    const many = JSON.stringify({ CmdletInput: { CmdletName: 'New-JournalRule', Parameters: params } });
    expect(await post(many)).toBe(401);
    // Gated through the glob *-TransportRule.
    const longName = JSON.stringify({ CmdletInput: { CmdletName: 'A'.repeat(500_000) + '-TransportRule', Parameters: {} } });
    expect(await post(longName)).toBe(401);
    const bigUser = await token('u'.repeat(5_000) + '@contoso.com');
    expect(await post(JSON.stringify({ CmdletInput: { CmdletName: 'New-JournalRule', Parameters: { Name: 'n' } } }), bigUser)).toBe(403);
    expect((await auditBytes(gw.dataDir)) - before).toBeLessThanOrEqual(3 * 5 * 1024);

    const [manyEvent, longEvent, userEvent] = await eventsAfter(seq);
    expect(manyEvent).toMatchObject({ bodySha256: sha256(many), truncated: { dropped: expect.any(Number) } });
    const kept = Object.keys(manyEvent!['parameters'] as object).length;
    expect(kept).toBeGreaterThan(10);
    expect((manyEvent!['truncated'] as { dropped: number }).dropped).toBe(50_000 - kept);
    expect(longEvent!['task']).toMatch(/^A{256}…\[cut: 500014 chars\]$/);
    expect(longEvent).toMatchObject({ bodySha256: sha256(longName), policy: 'transport-rules' });
    expect(userEvent!['actor']).toMatch(/^u{256}…\[cut: 5012 chars\]$/);
    expect(await verifyAuditFile(gw.audit.path)).toMatchObject({ ok: true });
  });

  it('a control API event is bounded too: its reason is cut like any other value', async () => {
    const seq = await lastSeq();
    const tok = await token('eve@contoso.com');
    const parameters: Record<string, string> = {};
    for (let i = 0; i < 8; i++) parameters[`P${i}`] = 'n'.repeat(500);
    const res = await fetch(`${gw.controlUrl}/api/requests`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${tok}` }, body: JSON.stringify({ task: 'New-JournalRule', reason: 'r'.repeat(1000), parameters }) });
    expect(res.status, await res.text()).toBe(201);
    const lines = (await readFile(gw.audit.path, 'utf8')).trim().split('\n').filter((l) => (JSON.parse(l) as { seq: number }).seq > seq);
    expect(lines.length).toBeGreaterThan(0);
    for (const l of lines) expect(Buffer.byteLength(l)).toBeLessThan(2 * 1024);
    expect(JSON.parse(lines[0]!)).toMatchObject({ type: 'request.created', reason: expect.stringMatching(/^r{256}…\[cut: 1000 chars\]$/) });
  });

  it('an event within the bound is recorded whole, with the body hash and no truncation marker', async () => {
    const seq = await lastSeq();
    const body = JSON.stringify({ CmdletInput: { CmdletName: 'New-JournalRule', Parameters: { Name: 'j1', Enabled: true } } });
    expect(await post(body)).toBe(401);
    const [event] = await eventsAfter(seq);
    expect(event).toMatchObject({ parameters: { name: 'j1', enabled: true }, bodySha256: sha256(body) });
    expect(event).not.toHaveProperty('truncated');
    const raw = (await readFile(gw.audit.path, 'utf8')).trim().split('\n').at(-1)!;
    expect(raw.length).toBeLessThan(1024);
  });
});

async function scrape(controlUrl: string, name: string): Promise<number | null> {
  const text = await (await fetch(`${controlUrl}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : null;
}

async function readyz(controlUrl: string): Promise<{ status: number; body: any }> {
  const res = await fetch(`${controlUrl}/readyz`);
  return { status: res.status, body: await res.json() };
}

async function until(what: string, cond: () => Promise<boolean>, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('the free-space watermark of the audit disk', () => {
  it('with room to spare: ready, and /metrics shows the free space and the watermark', async () => {
    expect((await readyz(gw.controlUrl)).status).toBe(200);
    expect(await scrape(gw.controlUrl, 'pamgate_audit_disk_low')).toBe(0);
    expect(await scrape(gw.controlUrl, 'pamgate_audit_disk_free_bytes')).toBeGreaterThan(0);
    expect(await scrape(gw.controlUrl, 'pamgate_audit_disk_min_free_bytes')).toBeGreaterThan(0);
  });

  it('below the watermark: /readyz fails with the reason, /metrics alerts, gated traffic is still decided and recorded', async () => {
    const low = await startTestGateway({ policies: TEST_POLICIES, upstreamUrl: upstream.url, auditMinFree: { bytes: Number.MAX_SAFE_INTEGER } });
    try {
      const ready = await readyz(low.controlUrl);
      expect(ready.status).toBe(503);
      expect(ready.body).toMatchObject({ status: 'not ready', checks: { audit: true, auditDisk: false } });
      expect(ready.body.reasons.auditDisk).toMatch(/free on the audit disk .* below the .* watermark \(PAMGATE_AUDIT_MIN_FREE\)/);
      expect(await scrape(low.controlUrl, 'pamgate_audit_disk_low')).toBe(1);

      const res = await fetch(low.proxyUrl + INVOKE, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ CmdletInput: { CmdletName: 'New-JournalRule', Parameters: {} } }) });
      expect(res.status).toBe(401);
      const ok = await fetch(low.proxyUrl + INVOKE, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ CmdletInput: { CmdletName: 'Get-Mailbox', Parameters: {} } }) });
      expect(ok.status).toBe(200);
      const types: string[] = [];
      for await (const e of readAuditEvents(low.audit.path)) types.push(e['type'] as string);
      expect(types.at(-1)).toBe('task.blocked');
    } finally {
      await low.close();
    }
  });

  it('crossing the watermark and back: warned once, readiness follows the disk', async () => {
    let free = 10 * 1024 ** 3;
    const lines: string[] = [];
    const pinoLog = (await import('pino')).default({ level: 'info' }, { write: (l: string) => void lines.push(l) });
    const watched = await startTestGateway({
      policies: TEST_POLICIES,
      upstreamUrl: upstream.url,
      log: pinoLog,
      auditMinFree: { percent: 5 },
      auditDiskCheckMs: 20,
      auditStatFs: async () => ({ freeBytes: free, totalBytes: 100 * 1024 ** 3 }),
    });
    try {
      expect((await readyz(watched.controlUrl)).status).toBe(200);
      free = 4 * 1024 ** 3; // under 5 % of 100 GiB
      await until('readyz to fail', async () => (await readyz(watched.controlUrl)).status === 503);
      expect(await scrape(watched.controlUrl, 'pamgate_audit_disk_free_bytes')).toBe(4 * 1024 ** 3);
      expect(await scrape(watched.controlUrl, 'pamgate_audit_disk_min_free_bytes')).toBe(5 * 1024 ** 3);
      await new Promise((r) => setTimeout(r, 100)); // several more checks while low
      const warnings = lines.map((l) => JSON.parse(l) as { level: number; msg: string }).filter((l) => l.level === 40 && /watermark/.test(l.msg));
      expect(warnings).toHaveLength(1);
      free = 6 * 1024 ** 3;
      await until('readyz to recover', async () => (await readyz(watched.controlUrl)).status === 200);
      expect(await scrape(watched.controlUrl, 'pamgate_audit_disk_low')).toBe(0);
    } finally {
      await watched.close();
    }
  });
});

describe('retention of rotated audit segments', () => {
  const segmentsOf = async (dir: string): Promise<string[]> => (await readdir(dir)).filter((n) => /^audit-\d+\.jsonl$/.test(n)).sort();

  /** Gated refusals until the data dir holds at least `n` rotated segments. */
  async function fillSegments(g: TestGateway, n: number): Promise<void> {
    const body = JSON.stringify({ CmdletInput: { CmdletName: 'New-JournalRule', Parameters: { Name: 'n'.repeat(200) } } });
    for (let i = 0; (await segmentsOf(g.dataDir)).length < n; i++) {
      if (i > 500) throw new Error('no rotation');
      const res = await fetch(g.proxyUrl + INVOKE, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      await res.arrayBuffer();
    }
  }

  it('keeps everything by default', async () => {
    const g = await startTestGateway({ policies: TEST_POLICIES, upstreamUrl: upstream.url, auditMaxBytes: 4096 });
    try {
      await fillSegments(g, 4);
      g.clock.advanceHours(24 * 365);
      await fillSegments(g, 5);
      expect((await segmentsOf(g.dataDir))[0]).toBe('audit-000001.jsonl');
    } finally {
      await g.close();
    }
  });

  it('after N days: old segments go, recorded in the chain; verify checks the retained tail and catches a segment removed beyond it', async () => {
    const g = await startTestGateway({ policies: TEST_POLICIES, upstreamUrl: upstream.url, auditMaxBytes: 4096, auditRetention: { days: 2, requireExport: false } });
    try {
      await fillSegments(g, 4);
      const before = await segmentsOf(g.dataDir);
      g.clock.advanceHours(24); // one day: nothing is old enough
      await fillSegments(g, before.length + 1);
      expect((await segmentsOf(g.dataDir))[0]).toBe('audit-000001.jsonl');

      g.clock.advanceHours(25);
      await fillSegments(g, (await segmentsOf(g.dataDir)).length + 1); // a rotation runs retention
      await until('old segments to be deleted', async () => !(await segmentsOf(g.dataDir)).includes('audit-000001.jsonl'));
      const left = await segmentsOf(g.dataDir);
      expect(left).toHaveLength(1); // all are two days old; the newest always stays (the live file's chain starts from it)

      const pruned: Array<Record<string, unknown>> = [];
      for await (const e of readAuditEvents(g.audit.path, { type: 'audit.pruned' })) pruned.push(e);
      expect(pruned).toHaveLength(1);
      expect(pruned[0]).toMatchObject({ first: 'audit-000001.jsonl', retentionDays: 2, requireExport: false });
      const firstKept = (await readFile(join(g.dataDir, left[0]!), 'utf8')).split('\n')[0]!;
      expect(JSON.parse(firstKept)).toMatchObject({ seq: (pruned[0]!['throughSeq'] as number) + 1, prev: pruned[0]!['throughHash'] });

      const verified = await verifyAuditFile(g.dataDir);
      expect(verified).toMatchObject({ ok: true, prunedThrough: pruned[0]!['throughSeq'] });
      let searched = 0;
      for await (const _ of readAuditEvents(g.audit.path, { type: 'task.blocked' })) searched++;
      expect(searched).toBeGreaterThan(0);

      // Removing the oldest retained segment is not retention.
      const { rm } = await import('node:fs/promises');
      await rm(join(g.dataDir, left[0]!));
      const tampered = await verifyAuditFile(g.dataDir);
      expect(tampered).toMatchObject({ ok: false, line: 1 });
      expect((tampered as { reason: string }).reason).toMatch(/no audit\.pruned event in the chain records them/);
    } finally {
      await g.close();
    }
  });

  it('until exported: a segment goes only once `audit export` has copied it; the export verifies as the chain\'s head', async () => {
    const { exportSegments } = await import('../../src/audit/export.js');
    const g = await startTestGateway({ policies: TEST_POLICIES, upstreamUrl: upstream.url, auditMaxBytes: 4096, auditRetention: { days: 0, requireExport: true } });
    try {
      await fillSegments(g, 3);
      await fillSegments(g, 4);
      expect((await segmentsOf(g.dataDir))[0]).toBe('audit-000001.jsonl'); // nothing exported yet

      const dest = join(g.dataDir, '..', `${join(g.dataDir).split('/').at(-1)}-export`);
      const exported = await exportSegments(g.dataDir, dest);
      expect(exported.map((e) => e.segment)).toEqual((await segmentsOf(dest)));
      expect(exported.length).toBeGreaterThanOrEqual(4);
      await fillSegments(g, (await segmentsOf(g.dataDir)).length + 1);
      await until('exported segments to be deleted', async () => !(await segmentsOf(g.dataDir)).includes('audit-000001.jsonl'));
      const left = await readdir(g.dataDir);
      for (const { segment } of exported) {
        expect(left).not.toContain(segment);
        expect(left).not.toContain(`${segment}.exported`);
      }

      const head = await verifyAuditFile(dest);
      const tail = await verifyAuditFile(g.dataDir);
      expect(head).toMatchObject({ ok: true });
      expect(tail).toMatchObject({ ok: true });
      // Every exported segment was pruned: the export ends exactly where the retained chain picks up.
      expect(head).toMatchObject({ events: (tail as { prunedThrough: number }).prunedThrough });
      const firstKept = JSON.parse((await readFile(join(g.dataDir, (await segmentsOf(g.dataDir))[0]!), 'utf8')).split('\n')[0]!) as { prev: string };
      expect(firstKept.prev).toBe((head as { lastHash: string }).lastHash);
    } finally {
      await g.close();
    }
  });
});
