import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog } from '../../src/audit/log.js';
import { verifyAuditFile } from '../../src/audit/verify.js';
import { diskModel } from './helpers/disk-model.js';

let dir: string;
const key = randomBytes(32);
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pamgate-keyed-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function writeEvents(opts: { macKey?: Buffer; n: number; maxBytes?: number }): Promise<void> {
  const log = await AuditLog.open({ dir, ...(opts.macKey ? { macKey: opts.macKey } : {}), ...(opts.maxBytes ? { maxBytes: opts.maxBytes } : {}) });
  for (let i = 0; i < opts.n; i++) await log.append({ type: 'task.blocked', actor: `eve${i}@contoso.com`, task: 'Set-TransportRule' });
  await log.close();
}

const liveRows = async (): Promise<string[]> => (await readFile(join(dir, 'audit.jsonl'), 'utf8')).split('\n').slice(0, -1);

/** What someone who can rewrite the data dir but lacks the key can do: recompute the plain chain from line `from` (0-based) on, and the head. */
async function rechainFrom(rows: string[], from: number): Promise<void> {
  let prev = from === 0 ? '0'.repeat(64) : (JSON.parse(rows[from - 1]!) as { hash: string }).hash;
  for (let i = from; i < rows.length; i++) {
    const body = rows[i]!.replace(/,"hash":"[0-9a-f]{64}"\}$/, '').replace(/"prev":"[0-9a-f]{64}"/, `"prev":"${prev}"`);
    prev = createHash('sha256').update(body + '}').digest('hex');
    rows[i] = body + ',"hash":"' + prev + '"}';
  }
  await writeFile(join(dir, 'audit.jsonl'), rows.map((r) => r + '\n').join(''));
  await writeFile(join(dir, 'audit.head'), JSON.stringify({ seq: rows.length, hash: prev }).padEnd(128, ' '));
}

describe('keyed audit chain', () => {
  it('gives every line a mac; verify with the key checks them, without it says they were not checked, with a wrong key fails', async () => {
    await writeEvents({ macKey: key, n: 5 });
    const rows = await liveRows();
    for (const r of rows) expect(r).toMatch(/,"mac":"[0-9a-f]{64}","hash":"[0-9a-f]{64}"\}$/);
    expect(await verifyAuditFile(dir, { key })).toMatchObject({ ok: true, events: 5, keyed: 5 });
    expect(await verifyAuditFile(dir)).toMatchObject({ ok: true, events: 5, macsUnchecked: 5 });
    expect(await verifyAuditFile(dir, { key: randomBytes(32) })).toMatchObject({ ok: false, line: 1, reason: expect.stringMatching(/^mac mismatch/) });
  });

  it('an edit with the plain chain recomputed passes the plain check but fails the keyed one at the edited line', async () => {
    await writeEvents({ macKey: key, n: 6 });
    const rows = await liveRows();
    rows[2] = rows[2]!.replace('eve2@contoso.com', 'bob@contoso.com');
    await rechainFrom(rows, 2);
    expect(await verifyAuditFile(dir)).toMatchObject({ ok: true, events: 6 });
    expect(await verifyAuditFile(dir, { key })).toMatchObject({ ok: false, line: 3, reason: expect.stringMatching(/^mac mismatch/) });
  });

  it('macs stripped from the tail, or from every line, fail the keyed check', async () => {
    await writeEvents({ macKey: key, n: 4 });
    const strip = (r: string): string => r.replace(/,"mac":"[0-9a-f]{64}"/, '');
    const rows = await liveRows();
    await rechainFrom([...rows.slice(0, 2), ...rows.slice(2).map(strip)], 2);
    expect(await verifyAuditFile(dir, { key })).toMatchObject({ ok: false, line: 3, reason: expect.stringMatching(/no mac/) });
    await rechainFrom(rows.map(strip), 0);
    expect(await verifyAuditFile(dir)).toMatchObject({ ok: true, events: 4 });
    expect(await verifyAuditFile(dir, { key })).toMatchObject({ ok: false, reason: expect.stringMatching(/no line carries a mac/) });
  });

  it('cut lines with a recomputed head fail the keyed check on the head', async () => {
    await writeEvents({ macKey: key, n: 5 });
    const rows = (await liveRows()).slice(0, 3);
    const last = (JSON.parse(rows[2]!) as { hash: string }).hash;
    await writeFile(join(dir, 'audit.jsonl'), rows.map((r) => r + '\n').join(''));
    await writeFile(join(dir, 'audit.head'), JSON.stringify({ seq: 3, hash: last }).padEnd(128, ' '));
    expect(await verifyAuditFile(dir)).toMatchObject({ ok: true, events: 3 });
    expect(await verifyAuditFile(dir, { key })).toMatchObject({ ok: false, reason: expect.stringMatching(/audit.head .*mac/) });
  });

  it('lines written before the key was configured are covered by the first keyed line', async () => {
    await writeEvents({ n: 3 });
    await writeEvents({ macKey: key, n: 2 });
    expect(await verifyAuditFile(dir, { key })).toMatchObject({ ok: true, events: 5, keyed: 2 });
    // Restarted without the key: the lines after are unkeyed, which the keyed check refuses.
    await writeEvents({ n: 1 });
    expect(await verifyAuditFile(dir, { key })).toMatchObject({ ok: false, line: 6, reason: expect.stringMatching(/no mac/) });
  });

  it('keeps the keyed chain across rotation and a crash replayed from the WAL', async () => {
    await writeEvents({ macKey: key, n: 40, maxBytes: 2048 });
    expect((await readdir(dir)).filter((n) => n.startsWith('audit-')).length).toBeGreaterThan(0);
    const { fs, crash } = diskModel();
    const log = await AuditLog.open({ dir, fs, macKey: key });
    for (let i = 0; i < 5; i++) await log.append({ type: 'task.blocked', i });
    await crash();
    const reopened = await AuditLog.open({ dir, macKey: key });
    await reopened.close();
    expect(await verifyAuditFile(dir, { key })).toMatchObject({ ok: true, events: 40 + 5 + 0 });
  });
});

describe('a missing anchor at open', () => {
  it('is recorded in the chain, and verify names it from then on', async () => {
    await writeEvents({ n: 5 });
    const rows = await liveRows();
    await writeFile(join(dir, 'audit.jsonl'), rows.slice(0, 3).map((r) => r + '\n').join(''));
    await unlink(join(dir, 'audit.head'));
    await unlink(join(dir, 'audit.wal'));
    const log = await AuditLog.open({ dir });
    expect(log.anchorMissing).toEqual({ fileSeq: 3 });
    await log.append({ type: 'later' });
    await log.close();
    const after = await liveRows();
    expect(JSON.parse(after[3]!)).toMatchObject({ seq: 4, type: 'audit.unanchored', fileSeq: 3 });
    expect(await verifyAuditFile(dir)).toMatchObject({ ok: false, line: 4, reason: expect.stringMatching(/^audit.head was missing at start/) });
  });

  it('a fresh data dir, a clean restart and a crash need no recording', async () => {
    await writeEvents({ n: 2 });
    const { fs, crash } = diskModel();
    const log = await AuditLog.open({ dir, fs });
    expect(log.anchorMissing).toBeNull();
    await log.append({ type: 'x' });
    await crash();
    const reopened = await AuditLog.open({ dir });
    expect(reopened.anchorMissing).toBeNull();
    await reopened.close();
    expect(await verifyAuditFile(dir)).toMatchObject({ ok: true, events: 3 });
  });

  it('a crash right after the first start, before any checkpoint, still verifies (open anchors seq 0)', async () => {
    const { fs, crash } = diskModel();
    const log = await AuditLog.open({ dir, fs, checkpointMs: 60_000 });
    await log.append({ type: 'gateway.started' });
    await log.append({ type: 'policy.loaded' });
    await crash();
    expect(await verifyAuditFile(dir)).toMatchObject({ ok: true, events: 2 });
    const reopened = await AuditLog.open({ dir });
    expect(reopened.anchorMissing).toBeNull();
    await reopened.close();
    expect(await verifyAuditFile(dir)).toMatchObject({ ok: true, events: 2 });
  });
});
