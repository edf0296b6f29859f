import { readdir, readFile, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog } from '../../src/audit/log.js';
import { readAuditEvents } from '../../src/audit/search.js';
import { verifyAuditFile } from '../../src/audit/verify.js';
import { tempDir } from '../helpers/gateway.js';
import { startUpstreamProcess } from '../helpers/upstream.js';
import { call, requestAccess } from './helpers/flows.js';
import { STATE_POLICIES } from './helpers/policies.js';
import { killAllGateways, runCli, spawnGateway } from './helpers/process.js';

let dir: string;
beforeEach(async () => {
  dir = await tempDir('pamgate-seg-');
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});
afterAll(async () => {
  await killAllGateways();
});

const segmentsIn = async (d: string): Promise<string[]> => (await readdir(d)).filter((n) => /^audit-\d{6}\.jsonl$/.test(n)).sort();
const rows = async (path: string): Promise<Array<{ seq: number; prev: string; hash: string; type: string }>> =>
  (await readFile(path, 'utf8')).split('\n').slice(0, -1).map((l) => JSON.parse(l) as { seq: number; prev: string; hash: string; type: string });

async function fill(n: number, maxBytes: number): Promise<AuditLog> {
  const log = await AuditLog.open({ dir, maxBytes });
  for (let i = 0; i < n; i++) await log.append({ type: 'request.created', actor: `user${i}@contoso.com`, pad: 'x'.repeat(100) });
  return log;
}

describe('audit segments', () => {
  it('rotates by size, continues the chain across files, and verifies the whole chain from the live file or the dir', async () => {
    const log = await fill(40, 1_000);
    await log.close();
    const segs = await segmentsIn(dir);
    expect(segs.length).toBeGreaterThanOrEqual(4);
    expect(segs[0]).toBe('audit-000001.jsonl');
    // seq and prev run on from one file into the next.
    let last: { seq: number; hash: string } = { seq: 0, hash: '0'.repeat(64) };
    for (const f of [...segs, 'audit.jsonl']) {
      for (const r of await rows(join(dir, f))) {
        expect(r.seq).toBe(last.seq + 1);
        expect(r.prev).toBe(last.hash);
        last = r;
      }
    }
    expect(last.seq).toBe(40);
    expect(await verifyAuditFile(join(dir, 'audit.jsonl'))).toMatchObject({ ok: true, events: 40, segments: segs.length });
    expect(await verifyAuditFile(dir)).toMatchObject({ ok: true, events: 40 });
    // A lone segment still verifies as a file of its own (from seq 1).
    expect(await verifyAuditFile(join(dir, segs[0]!))).toMatchObject({ ok: true });
    // Search reads across segments in order.
    const found: number[] = [];
    for await (const e of readAuditEvents(join(dir, 'audit.jsonl'), { type: 'request.created' })) found.push(e['seq'] as number);
    expect(found).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
  });

  it('reopens after a crash between the rename and the new live file, and the chain goes on', async () => {
    const log = await fill(10, 100_000);
    await log.close();
    // The crash: live file renamed away as the next segment, no new live file yet.
    await rename(join(dir, 'audit.jsonl'), join(dir, 'audit-000001.jsonl'));
    expect(await verifyAuditFile(join(dir, 'audit.jsonl'))).toMatchObject({ ok: true, events: 10 });
    const again = await AuditLog.open({ dir, maxBytes: 100_000 });
    await again.append({ type: 'after' });
    await again.close();
    const live = await rows(join(dir, 'audit.jsonl'));
    const seg = await rows(join(dir, 'audit-000001.jsonl'));
    expect(live[0]).toMatchObject({ seq: 11, type: 'after', prev: seg.at(-1)!.hash });
    expect(await verifyAuditFile(dir)).toMatchObject({ ok: true, events: 11, segments: 1 });
    // The next rotation takes the next free number.
    const more = await AuditLog.open({ dir, maxBytes: 200 });
    await more.append({ type: 'x', pad: 'y'.repeat(300) });
    await more.close();
    expect(await segmentsIn(dir)).toEqual(['audit-000001.jsonl', 'audit-000002.jsonl']);
    expect(await verifyAuditFile(dir)).toMatchObject({ ok: true, events: 12 });
  });

  it('detects an edited line in a segment, a removed middle segment and a removed first segment', async () => {
    const log = await fill(30, 1_000);
    await log.close();
    const segs = await segmentsIn(dir);
    const live = join(dir, 'audit.jsonl');
    const second = join(dir, segs[1]!);
    const original = await readFile(second, 'utf8');

    await writeFile(second, original.replace('user', 'USER'));
    const edited = await verifyAuditFile(live);
    expect(edited).toMatchObject({ ok: false, line: 1, reason: 'hash mismatch (line edited)', file: second });

    await unlink(second);
    const gap = await verifyAuditFile(live);
    expect(gap).toMatchObject({ ok: false, line: 1, file: join(dir, segs[2]!) });
    expect(gap.ok ? '' : gap.reason).toMatch(/seq \d+ expected \d+/);
    await writeFile(second, original);

    await unlink(join(dir, segs[0]!));
    expect(await verifyAuditFile(live)).toMatchObject({ ok: false, line: 1, file: join(dir, segs[1]!) });
    await rm(dir, { recursive: true, force: true });
  });

  it('the head anchor catches a removed tail: the newest segment, or the live file, gone', async () => {
    const log = await fill(32, 1_000);
    await log.close();
    const live = join(dir, 'audit.jsonl');
    expect((await rows(live)).length).toBeGreaterThan(0);
    await rename(live, live + '.bak');
    const noLive = await verifyAuditFile(live);
    expect(noLive.ok ? '' : noLive.reason).toMatch(/^file truncated: head records seq 32 but file ends at seq \d+/);
    await rename(live + '.bak', live);
    const segs = await segmentsIn(dir);
    await unlink(join(dir, segs.at(-1)!));
    await writeFile(live, '');
    const result = await verifyAuditFile(live);
    expect(result.ok).toBe(false);
    expect(result.ok ? '' : result.reason).toMatch(/^file truncated: head records seq 32/);
  });

  it('a gateway process rotates by PAMGATE_AUDIT_MAX_BYTES and `pamgate audit verify` checks every segment', async () => {
    const upstream = await startUpstreamProcess();
    try {
      const config = join(dir, 'policies.yaml');
      await writeFile(config, STATE_POLICIES);
      const gw = await spawnGateway({ dataDir: dir, configPath: config, upstreamUrl: upstream.url, env: { PAMGATE_AUDIT_MAX_BYTES: '4096' } });
      await requestAccess(gw.controlUrl, 'vic@contoso.com', 'Search-Mailbox');
      for (let i = 0; i < 40; i++) expect(await call(gw.proxyUrl, 'vic@contoso.com', 'Search-Mailbox')).toBe(200);
      expect(await gw.term()).toBe(0);
      const segs = await segmentsIn(dir);
      expect(segs.length).toBeGreaterThanOrEqual(3);

      const ok = await runCli(['audit', 'verify', dir]);
      expect(ok).toMatchObject({ code: 0, stderr: '' });
      expect(ok.stdout).toMatch(new RegExp(`^ok \\d+ events in ${segs.length + 1} files\\n$`));
      expect((await runCli(['audit', 'verify', join(dir, 'audit.jsonl')])).code).toBe(0);
      const search = await runCli(['audit', 'search', dir, '--type', 'task.executed', '--json']);
      expect(search.stdout.trim().split('\n')).toHaveLength(40);

      const first = join(dir, segs[0]!);
      await writeFile(first, (await readFile(first, 'utf8')).replace('"gateway.started"', '"gateway.STARTED"'));
      const bad = await runCli(['audit', 'verify', dir]);
      expect(bad.code).not.toBe(0);
      expect(bad.stderr).toBe(`${first}:1: hash mismatch (line edited)\n`);
    } finally {
      await upstream.stop();
    }
  });
});
