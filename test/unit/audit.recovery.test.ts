import { appendFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { nodeAuditFs, type AuditFs } from '../../src/audit/fs.js';
import { AuditLog } from '../../src/audit/log.js';
import { verifyAuditFile } from '../../src/audit/verify.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pamgate-audit-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

type Parsed = Record<string, unknown> & { seq: number; type: string; hash: string; prev: string };
async function events(path: string): Promise<Parsed[]> {
  const text = await readFile(path, 'utf8');
  return text.split('\n').slice(0, -1).map((l) => JSON.parse(l) as Parsed);
}

async function seed(n: number): Promise<string> {
  const log = await AuditLog.open({ dir });
  for (let i = 0; i < n; i++) await log.append({ type: 'request.created', i });
  await log.close();
  return log.path;
}

describe('open repairs a torn tail', () => {
  it('cuts a partial last line and records it as audit.repaired', async () => {
    const path = await seed(3);
    const torn = '{"seq":4,"time":"2026-11-23T10:0';
    await appendFile(path, torn);

    const log = await AuditLog.open({ dir });
    await log.append({ type: 'after' });
    await log.close();

    const all = await events(path);
    expect(all.map((e) => [e.seq, e.type])).toEqual([[1, 'request.created'], [2, 'request.created'], [3, 'request.created'], [4, 'audit.repaired'], [5, 'after']]);
    expect(all[3]).toMatchObject({ droppedBytes: Buffer.byteLength(torn), dropped: torn, prev: all[2]!.hash });
    expect(await verifyAuditFile(path)).toMatchObject({ ok: true, events: 5 });
  });

  it('treats an unparseable final line as torn and caps the kept text at 1000 chars', async () => {
    const path = await seed(2);
    const garbage = 'x'.repeat(5000) + '\n';
    await appendFile(path, garbage);

    const log = await AuditLog.open({ dir });
    await log.close();
    const all = await events(path);
    expect(all).toHaveLength(3);
    expect(all[2]).toMatchObject({ seq: 3, type: 'audit.repaired', droppedBytes: 5001 });
    expect(all[2]!['dropped']).toBe('x'.repeat(1000));
    expect(await verifyAuditFile(path)).toMatchObject({ ok: true, events: 3 });
  });

  it('repairs a file that holds only a torn line', async () => {
    const path = join(dir, 'audit.jsonl');
    await writeFile(path, '{"seq":1,"ti');
    const log = await AuditLog.open({ dir });
    await log.close();
    const all = await events(path);
    expect(all.map((e) => [e.seq, e.type, e.prev])).toEqual([[1, 'audit.repaired', '0'.repeat(64)]]);
    expect(await verifyAuditFile(path)).toMatchObject({ ok: true, events: 1 });
  });

  it('leaves corruption before the last line alone and continues from the last line', async () => {
    const path = await seed(3);
    const text = await readFile(path, 'utf8');
    const rows = text.split('\n');
    rows[1] = rows[1]!.replace('request.created', 'request.CREATED');
    await writeFile(path, rows.join('\n'));

    const log = await AuditLog.open({ dir });
    await log.append({ type: 'after' });
    await log.close();
    const all = await events(path);
    expect(all).toHaveLength(4);
    expect(all[3]).toMatchObject({ seq: 4, prev: all[2]!.hash });
    expect(all.some((e) => e.type === 'audit.repaired')).toBe(false);
    expect(await verifyAuditFile(path)).toEqual({ ok: false, line: 2, reason: 'hash mismatch (line edited)' });
  });

  it('records lines removed while down (head ahead of file) instead of silently re-anchoring', async () => {
    const path = await seed(4);
    const text = await readFile(path, 'utf8');
    await writeFile(path, text.split('\n').slice(0, 2).join('\n') + '\n');

    const log = await AuditLog.open({ dir });
    await log.close();
    const all = await events(path);
    expect(all[2]).toMatchObject({ seq: 3, type: 'audit.truncated', headSeq: 4, fileSeq: 2 });
    const result = await verifyAuditFile(path);
    expect(result).toMatchObject({ ok: false, line: 3 });
    expect(result.ok ? '' : result.reason).toMatch(/^file truncated: head records seq 4 but file ended at seq 2/);
  });
});

interface Faults {
  write: Error | null;
  /** How much of the buffer reaches the file before the write fails. */
  partial: 'none' | 'half' | 'all';
  truncate: Error | null;
  truncateCalls: number;
}

function faultyFs(): { fs: AuditFs; faults: Faults } {
  const faults: Faults = { write: null, partial: 'none', truncate: null, truncateCalls: 0 };
  const walFds = new Set<number>();
  const fs: AuditFs = {
    ...nodeAuditFs,
    open: async (path, flags, mode) => {
      const fd = await nodeAuditFs.open(path, flags, mode);
      if (path.endsWith('audit.wal')) walFds.add(fd);
      return fd;
    },
    // A failing disk: appends to the audit file (position null) and every write to audit.wal fail;
    // audit.head's writes are left alone.
    write: async (fd, buf, off, len, pos) => {
      if ((pos === null || walFds.has(fd)) && faults.write) {
        if (faults.partial !== 'none') await nodeAuditFs.write(fd, buf, off, faults.partial === 'all' ? len : Math.max(1, Math.floor(len / 2)), pos);
        throw faults.write;
      }
      return nodeAuditFs.write(fd, buf, off, len, pos);
    },
    ftruncate: async (fd, len) => {
      faults.truncateCalls++;
      if (faults.truncate) throw faults.truncate;
      return nodeAuditFs.ftruncate(fd, len);
    },
  };
  return { fs, faults };
}

function eio(what: string): Error {
  return Object.assign(new Error(`EIO: ${what}`), { code: 'EIO' });
}

describe('write and sync failures', () => {
  it.each([
    // The live file is O_DSYNC: a failed flush is a write that fails after its bytes reached the page cache.
    ['the sync fails after a full write', (f: Faults) => { f.write = eio('sync'); f.partial = 'all'; }],
    ['write fails after a partial write', (f: Faults) => { f.write = eio('write'); f.partial = 'half'; }],
    ['write fails outright', (f: Faults) => { f.write = eio('write'); }],
  ])('%s: rejects the batch, leaves no partial line, recovers when the disk is back', async (_name, inject) => {
    const { fs, faults } = faultyFs();
    const log = await AuditLog.open({ dir, fs });
    await log.append({ type: 'before' });
    const durable = await readFile(log.path);

    inject(faults);
    const batch = [log.append({ type: 'lost', i: 1 }), log.append({ type: 'lost', i: 2 })];
    for (const p of batch) await expect(p).rejects.toThrow(/EIO/);
    expect(log.healthy).toBe(false);
    expect(await readFile(log.path)).toEqual(durable);
    expect(log.stats().events).toBe(1);

    faults.write = null;
    await log.append({ type: 'after' });
    expect(log.healthy).toBe(true);
    await log.close();

    const all = await events(log.path);
    expect(all.map((e) => [e.seq, e.type])).toEqual([[1, 'before'], [2, 'after']]);
    expect(all[1]!.prev).toBe(all[0]!.hash);
    expect(await verifyAuditFile(log.path)).toMatchObject({ ok: true, events: 2 });
  });

  it('when the truncate fails too, retries it before the next write and never writes on top of the partial line', async () => {
    const { fs, faults } = faultyFs();
    const log = await AuditLog.open({ dir, fs });
    await log.append({ type: 'before' });
    const durable = await readFile(log.path);

    faults.write = eio('write');
    faults.partial = 'half';
    faults.truncate = eio('ftruncate');
    await expect(log.append({ type: 'lost' })).rejects.toThrow(/EIO: write/);
    // The WAL write comes first and failed: audit.jsonl never saw the batch; the cut-back is still owed.
    expect(await readFile(log.path)).toEqual(durable);

    faults.write = null; // disk writable again but truncate still failing: must not append after garbage
    await expect(log.append({ type: 'still-lost' })).rejects.toThrow(/EIO: ftruncate/);
    expect(log.healthy).toBe(false);

    faults.truncate = null;
    await log.append({ type: 'after' });
    expect(log.healthy).toBe(true);
    await log.close();
    const all = await events(log.path);
    expect(all.map((e) => [e.seq, e.type])).toEqual([[1, 'before'], [2, 'after']]);
    expect(await verifyAuditFile(log.path)).toMatchObject({ ok: true, events: 2 });
  });

  it('makes the cut-back durable (fdatasync after the truncate) before anything else is written', async () => {
    const calls: string[] = [];
    const { fs, faults } = faultyFs();
    const traced: AuditFs = {
      ...fs,
      write: async (fd, buf, off, len, pos) => {
        if (pos === null) calls.push('write');
        return fs.write(fd, buf, off, len, pos);
      },
      ftruncate: async (fd, len) => (calls.push('ftruncate'), fs.ftruncate(fd, len)),
      fdatasync: async (fd) => (calls.push('fdatasync'), fs.fdatasync(fd)),
    };
    const log = await AuditLog.open({ dir, fs: traced });
    await log.append({ type: 'before' });
    faults.write = eio('write');
    faults.partial = 'half';
    await expect(log.append({ type: 'lost' })).rejects.toThrow(/EIO/);
    faults.write = null;
    await log.append({ type: 'after' });
    await log.close();
    const cut = calls.indexOf('ftruncate');
    expect(cut).toBeGreaterThan(0);
    expect(calls.slice(cut, cut + 3)).toEqual(['ftruncate', 'fdatasync', 'write']);
  });

  it('probe reports the disk state without needing an event', async () => {
    const { fs, faults } = faultyFs();
    const log = await AuditLog.open({ dir, fs });
    expect(await log.probe()).toBe(true);

    faults.write = eio('sync');
    faults.partial = 'all';
    await expect(log.append({ type: 'lost' })).rejects.toThrow(/EIO/);
    expect(await log.probe()).toBe(false);
    expect(log.healthy).toBe(false);

    faults.write = null;
    expect(await log.probe()).toBe(true);
    expect(log.healthy).toBe(true);
    await log.close();
    expect((await readFile(log.path)).length).toBe(0);
  });

  it('open fails closed when the repair record cannot be made durable', async () => {
    const path = await seed(1);
    await appendFile(path, '{"seq":2');
    const { fs, faults } = faultyFs();
    faults.write = eio('sync');
    faults.partial = 'all';
    await expect(AuditLog.open({ dir, fs })).rejects.toThrow(/EIO/);
  });
});
