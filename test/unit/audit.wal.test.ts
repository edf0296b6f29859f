import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog } from '../../src/audit/log.js';
import { verifyAuditFile } from '../../src/audit/verify.js';
import { lapAfter, readLap } from '../../src/audit/wal.js';
import { faultyFs, type Faults } from './helpers/faulty-fs.js';

// The durable write of a batch goes to audit.wal; audit.jsonl is only synced by checkpoints. These
// tests take away what a crash can take away (the live file's unsynced tail) and check that nothing
// acknowledged is lost and nothing refused comes back.

const LOG_JS = fileURLToPath(new URL('../../dist/audit/log.js', import.meta.url));
let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pamgate-wal-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

type Parsed = { seq: number; type: string; hash: string; prev: string; i?: number };
async function events(path: string): Promise<Parsed[]> {
  const text = await readFile(path, 'utf8');
  return text.split('\n').slice(0, -1).map((l) => JSON.parse(l) as Parsed);
}

/**
 * A separate process appends `n` events (in batches of `batch`), prints once each batch is
 * acknowledged, and is killed with SIGKILL right after the last one: no close(), no checkpoint after.
 */
function appendThenCrash(n: number, batch: number, walBytes?: number, waitMs = 0): Promise<string> {
  const script = `
    const { AuditLog } = await import(${JSON.stringify(LOG_JS)});
    const log = await AuditLog.open({ dir: ${JSON.stringify(dir)}${walBytes ? `, walBytes: ${walBytes}` : ''} });
    for (let i = 0; i < ${n}; i += ${batch}) {
      await Promise.all(Array.from({ length: Math.min(${batch}, ${n} - i) }, (_, k) => log.append({ type: 'task.executed', i: i + k, pad: 'p'.repeat(100) })));
    }
    await new Promise((r) => setTimeout(r, ${waitMs}));
    process.stdout.write('acknowledged ${n}\\n', () => process.kill(process.pid, 'SIGKILL'));
  `;
  return new Promise((resolve) => {
    execFile(process.execPath, ['--input-type=module', '-e', script], (_err, stdout) => resolve(stdout));
  });
}

/** Drops the live file's tail, as a power loss drops what was only in the page cache. */
async function loseLiveTail(keepLines: number): Promise<void> {
  const path = join(dir, 'audit.jsonl');
  const text = await readFile(path, 'utf8');
  const keep = text.split('\n').slice(0, keepLines).join('\n');
  await truncate(path, Buffer.byteLength(keepLines === 0 ? '' : keep + '\n'));
}

describe('audit.wal: what a crash took from audit.jsonl comes back', () => {
  it('restores acknowledged lines the live file lost, without an audit.repaired record, and the chain verifies', async () => {
    expect(await appendThenCrash(200, 10)).toContain('acknowledged 200');
    await loseLiveTail(37);
    // Before the next start, verify says the chain holds so far and where the rest is.
    const v0 = await verifyAuditFile(dir);
    expect(v0).toMatchObject({ ok: true, events: 37, inWal: 163 });

    const log = await AuditLog.open({ dir });
    expect(log.restoredLines).toBe(163);
    await log.append({ type: 'after' });
    await log.close();
    const all = await events(log.path);
    expect(all.map((e) => e.seq)).toEqual(Array.from({ length: 201 }, (_, k) => k + 1));
    expect(all.filter((e) => e.type === 'task.executed').map((e) => e.i)).toEqual(Array.from({ length: 200 }, (_, k) => k));
    expect(all.some((e) => e.type === 'audit.repaired')).toBe(false);
    expect(await verifyAuditFile(log.path)).toMatchObject({ ok: true, events: 201 });
  });

  it('a line torn mid-copy that the WAL holds whole is completed, not recorded as dropped', async () => {
    await appendThenCrash(30, 5);
    const path = join(dir, 'audit.jsonl');
    const size = (await stat(path)).size;
    await truncate(path, size - 40); // the last line loses its end

    const log = await AuditLog.open({ dir });
    await log.close();
    const all = await events(path);
    expect(all).toHaveLength(30);
    expect(all.some((e) => e.type === 'audit.repaired')).toBe(false);
    expect(await verifyAuditFile(path)).toMatchObject({ ok: true, events: 30 });
  });

  it('keeps working across WAL laps (a lap starts over only once the live file is durable)', async () => {
    const walBytes = 8 * 1024; // ~30 lines a lap
    expect(await appendThenCrash(500, 7, walBytes)).toContain('acknowledged 500');
    expect((await stat(join(dir, 'audit.wal'))).size).toBe(walBytes);
    // Every line the last lap holds may be gone from the live file; anything before it must be durable there.
    const lap = readLap(await readFile(join(dir, 'audit.wal')))!;
    expect(lap.base.seq).toBeGreaterThan(400);
    expect(lap.seq).toBe(500);
    await loseLiveTail(lap.base.seq);

    const log = await AuditLog.open({ dir, walBytes });
    expect(log.restoredLines).toBe(500 - lap.base.seq);
    await log.close();
    expect(await verifyAuditFile(log.path)).toMatchObject({ ok: true, events: 500 });
  });

  it('a batch larger than the whole WAL is made durable in the live file itself', async () => {
    const log = await AuditLog.open({ dir, walBytes: 4096 });
    await log.append({ type: 'small' });
    await log.append({ type: 'big', pad: 'b'.repeat(10_000) });
    await log.append({ type: 'small-again' });
    await log.close();
    const all = await events(log.path);
    expect(all.map((e) => e.type)).toEqual(['small', 'big', 'small-again']);
    expect(await verifyAuditFile(log.path)).toMatchObject({ ok: true, events: 3 });
  });

  it('a crash right after a batch larger than the WAL keeps it (the lap after it started before it was acknowledged)', async () => {
    const log = await AuditLog.open({ dir, walBytes: 4096 });
    await log.append({ type: 'small' });
    await log.append({ type: 'big', pad: 'b'.repeat(10_000) });
    // Crash: no close, no batch after the big one.
    const reopened = await AuditLog.open({ dir, walBytes: 4096 });
    await reopened.close();
    const all = await events(reopened.path);
    expect(all.map((e) => e.type)).toEqual(['small', 'big']);
    expect(await verifyAuditFile(dir)).toMatchObject({ ok: true, events: 2 });
    void log; // abandoned on purpose
  });

  it('a clean close leaves an empty lap: nothing to restore, and lines removed while down are still caught by the head', async () => {
    const log = await AuditLog.open({ dir });
    for (let i = 0; i < 5; i++) await log.append({ type: 'x', i });
    await log.close();
    expect(readLap(await readFile(join(dir, 'audit.wal')))).toMatchObject({ lines: 0, seq: 5 });
    await loseLiveTail(3);

    const again = await AuditLog.open({ dir });
    expect(again.restoredLines).toBe(0);
    await again.close();
    const all = await events(again.path);
    expect(all.map((e) => e.type)).toEqual(['x', 'x', 'x', 'audit.truncated']);
  });

  it('reads a lap from its header on, and finds what follows a given chain position in it', async () => {
    await appendThenCrash(20, 4);
    const lap = readLap(await readFile(join(dir, 'audit.wal')))!;
    // Batches of 4 reach audit.jsonl after their answer, so the kill may beat them there: the lap is the source.
    const lines = lap.bytes.toString().split('\n');
    expect(lines.slice(0, -1).map((l) => (JSON.parse(l) as Parsed).seq)).toEqual(Array.from({ length: 20 }, (_, k) => k + 1));
    expect(lap).toMatchObject({ base: { liveOffset: 0, seq: 0, hash: '0'.repeat(64) }, lines: 20, seq: 20, hash: (JSON.parse(lines[19]!) as Parsed).hash });
    const at10 = JSON.parse(lines[9]!) as Parsed;
    expect(lapAfter(lap, 10, at10.hash).lines).toBe(10);
    expect(lapAfter(lap, 10, at10.hash).bytes.toString()).toBe(lines.slice(10).join('\n'));
    expect(lapAfter(lap, 10, 'f'.repeat(64)).lines).toBe(0);
    expect(lapAfter(lap, 20, (JSON.parse(lines[19]!) as Parsed).hash).lines).toBe(0);
  });

  it('does not follow a lap whose base is gone from the live file (lines removed while down): the head check reports it', async () => {
    await appendThenCrash(20, 4);
    await writeFile(join(dir, 'audit.jsonl'), ''); // someone emptied it while down
    const log = await AuditLog.open({ dir });
    expect(log.restoredLines).toBe(20); // the lap's base (seq 0 at offset 0) is still there, so the lap is followed
    await log.close();
    expect(await verifyAuditFile(dir)).toMatchObject({ ok: true, events: 20 });

    // A lap based after lines that are no longer in the file is not followed.
    expect(await appendThenCrash(30, 1, 4096, 300)).toContain('acknowledged 30'); // the wait lets a checkpoint write the head
    const lap = readLap(await readFile(join(dir, 'audit.wal')))!;
    expect(lap.base.seq).toBeGreaterThan(20);
    await loseLiveTail(lap.base.seq - 3); // the base itself is gone
    const third = await AuditLog.open({ dir, walBytes: 4096 });
    expect(third.restoredLines).toBe(0);
    await third.close();
    expect((await events(join(dir, 'audit.jsonl'))).at(-1)!.type).toBe('audit.truncated');
  });
});

describe('audit.wal: failures', () => {
  it.each([
    ['a WAL write that fails outright', (f: Faults) => void (f.wal = 'outright'), /EIO/],
    ['a WAL write that fails half-written', (f: Faults) => void (f.wal = 'half'), /EIO/],
    ['a WAL write that fails after all its bytes', (f: Faults) => void (f.wal = 'all'), /EIO/],
  ] as const)('%s refuses the batch; its lines are in neither file, not even after a crash', async (_name, inject, error) => {
    const { fs, faults } = faultyFs();
    const log = await AuditLog.open({ dir, fs });
    await log.append({ type: 'before' });
    inject(faults);
    await expect(log.append({ type: 'refused' })).rejects.toThrow(error);
    expect(log.healthy).toBe(false);
    expect((await events(log.path)).map((e) => e.type)).toEqual(['before']);
    // Crash now (no close): a reopen must not bring back the refused line from the WAL.
    const reopened = await AuditLog.open({ dir });
    expect(reopened.restoredLines).toBe(0);
    await reopened.append({ type: 'after' });
    await reopened.close();
    expect((await events(log.path)).map((e) => e.type)).toEqual(['before', 'after']);
    expect(await verifyAuditFile(log.path)).toMatchObject({ ok: true, events: 2 });
  });

  it('a live append that fails after the WAL took the batch: the batch stands, and audit.jsonl gets its lines back from the WAL', async () => {
    const { fs, faults } = faultyFs();
    const log = await AuditLog.open({ dir, fs });
    await log.append({ type: 'before' });
    faults.liveAppend = true;
    await log.append({ type: 'durable' }); // acknowledged: its line is durable in the WAL
    expect(log.healthy).toBe(false);
    expect((await events(log.path)).map((e) => e.type)).toEqual(['before']);
    // While audit.jsonl cannot take the repair, later batches are refused (fail closed)...
    await expect(log.append({ type: 'refused' })).rejects.toThrow(/ENOSPC/);
    // ...and a crash now loses nothing acknowledged: open() restores the line from the WAL.
    const reopened = await AuditLog.open({ dir });
    expect(reopened.restoredLines).toBeGreaterThanOrEqual(1); // the failed repair may have cut more than it could rewrite
    await reopened.close();
    expect((await events(log.path)).map((e) => e.type)).toEqual(['before', 'durable']);

    // Without the crash: once the disk takes writes again the next batch repairs the file first.
    faults.liveAppend = false;
    await log.append({ type: 'after' });
    expect(log.healthy).toBe(true);
    await log.close();
    const final = await AuditLog.open({ dir });
    await final.close();
    expect((await events(log.path)).map((e) => e.type)).toEqual(['before', 'durable', 'after']);
    expect(await verifyAuditFile(log.path)).toMatchObject({ ok: true, events: 3 });
  });

  it('a failed sync of the live file: the next batch first rewrites its unsynced part from the WAL; nothing is lost', async () => {
    const { fs, faults } = faultyFs();
    const log = await AuditLog.open({ dir, fs });
    for (let i = 0; i < 5; i++) await log.append({ type: 'acknowledged', i });
    faults.liveSync = true;
    await new Promise((r) => setTimeout(r, 250)); // a checkpoint runs and its fdatasync fails
    expect(log.healthy).toBe(false);
    // While the live file cannot be synced, a batch that must first repair it is refused (fail closed).
    await expect(log.append({ type: 'refused' })).rejects.toThrow(/EIO/);
    expect(await log.probe()).toBe(false);

    faults.liveSync = false;
    expect(await log.probe()).toBe(true);
    await log.append({ type: 'after' });
    await log.close();
    const all = await events(log.path);
    expect(all.map((e) => e.type)).toEqual(['acknowledged', 'acknowledged', 'acknowledged', 'acknowledged', 'acknowledged', 'after']);
    expect(await verifyAuditFile(log.path)).toMatchObject({ ok: true, events: 6 });
  });

  it('a failed sync when a lap is full refuses the batch instead of overwriting lines the live file may not hold', async () => {
    const { fs, faults } = faultyFs();
    const log = await AuditLog.open({ dir, fs, walBytes: 2048 });
    for (let i = 0; i < 5; i++) await log.append({ type: 'acknowledged', pad: 'a'.repeat(200) });
    faults.liveSync = true;
    let refused = 0;
    for (let i = 0; i < 10; i++) await log.append({ type: 'more', pad: 'm'.repeat(200) }).catch(() => refused++);
    expect(refused).toBeGreaterThan(0);
    faults.liveSync = false;
    await log.append({ type: 'after' });
    await log.close();
    const all = await events(log.path);
    expect(all.filter((e) => e.type === 'acknowledged')).toHaveLength(5);
    expect(all.filter((e) => e.type === 'more')).toHaveLength(10 - refused);
    expect(await verifyAuditFile(log.path)).toMatchObject({ ok: true, events: all.length });
  });
});
