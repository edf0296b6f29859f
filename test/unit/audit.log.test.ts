import { createHash } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { nodeAuditFs, type AuditFs } from '../../src/audit/fs.js';
import { AuditLog } from '../../src/audit/log.js';
import { verifyAuditFile } from '../../src/audit/verify.js';

const GENESIS = '0'.repeat(64);
let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pamgate-audit-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function lines(path: string): Promise<string[]> {
  const text = await readFile(path, 'utf8');
  expect(text.endsWith('\n') || text === '').toBe(true);
  return text.split('\n').slice(0, -1);
}

/** node:fs, recording each call as "<op> <file>" ("append" for writes at the end, "write" positional). */
function tracedFs(opts: { slowSync?: number } = {}) {
  const names = new Map<number, string>();
  const opened: Array<[string, number]> = [];
  const calls: string[] = [];
  const name = (fd: number): string => names.get(fd) ?? String(fd);
  const fs: AuditFs = {
    ...nodeAuditFs,
    open: async (path, flags, mode) => {
      const fd = await nodeAuditFs.open(path, flags, mode);
      const file = path.split('/').at(-1)!;
      names.set(fd, file);
      opened.push([file, flags as number]);
      return fd;
    },
    write: async (fd, buf, off, len, pos) => {
      const n = await nodeAuditFs.write(fd, buf, off, len, pos);
      calls.push(`${pos === null ? 'append' : len === 1 ? 'cut' : pos === 0 && name(fd) === 'audit.wal' ? 'lap' : 'write'} ${name(fd)}`);
      return n;
    },
    fdatasync: async (fd) => {
      if (opts.slowSync) await new Promise((r) => setTimeout(r, opts.slowSync));
      await nodeAuditFs.fdatasync(fd);
      calls.push(`fdatasync ${name(fd)}`);
    },
    rename: async (from, to) => (calls.push('rename'), nodeAuditFs.rename!(from, to)),
  };
  const flagsOf = Object.assign((file: string): number => opened.filter(([f]) => f === file).at(-1)![1], {
    all: (file: string): number[] => opened.filter(([f]) => f === file).map(([, flags]) => flags),
  });
  return { fs, calls, flagsOf };
}

function sha256(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

describe('AuditLog line format', () => {
  it('writes keys in the contract order, nulls for absent fields, and hash over the line without hash', async () => {
    const log = await AuditLog.open({ dir, now: () => Date.UTC(2026, 10, 23, 10, 0, 0) });
    await log.append({ type: 'task.blocked', actor: 'eve@contoso.com', remote: '127.0.0.1', reason: 'no grant', status: 403 });
    await log.append({ type: 'policy.loaded', skipped: undefined, nested: { a: [1, 2] } });
    await log.close();

    const [first, second] = await lines(log.path);
    const one = JSON.parse(first!) as Record<string, unknown>;
    expect(Object.keys(one)).toEqual([
      'seq', 'time', 'type', 'actor', 'task', 'policy', 'requestId', 'remote', 'reason', 'status', 'prev', 'hash',
    ]);
    expect(one).toMatchObject({
      seq: 1, time: '2026-11-23T10:00:00.000Z', type: 'task.blocked', actor: 'eve@contoso.com',
      task: null, policy: null, requestId: null, remote: '127.0.0.1', prev: GENESIS,
    });
    const { hash, ...withoutHash } = one;
    const body = JSON.stringify(withoutHash);
    expect(hash).toBe(sha256(body));
    expect(first).toBe(body.slice(0, -1) + ',"hash":"' + String(hash) + '"}');

    const two = JSON.parse(second!) as Record<string, unknown>;
    expect(two['seq']).toBe(2);
    expect(two['prev']).toBe(hash);
    expect('skipped' in two).toBe(false);
    expect(two['nested']).toEqual({ a: [1, 2] });
  });

  it('refuses reserved or unserialisable events without disturbing the rest of the batch', async () => {
    const log = await AuditLog.open({ dir });
    const results = await Promise.allSettled([
      log.append({ type: 'a' }),
      log.append({ type: 'b', seq: 99 }),
      log.append({ type: 'c', big: 1n }),
      log.append({ type: '' }),
      log.append({ type: 'd' }),
    ]);
    await log.close();
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'rejected', 'fulfilled']);
    const written = (await lines(log.path)).map((l) => JSON.parse(l) as { seq: number; type: string });
    expect(written.map((e) => [e.seq, e.type])).toEqual([[1, 'a'], [2, 'd']]);
    expect(await verifyAuditFile(log.path)).toMatchObject({ ok: true, events: 2 });
  });
});

describe('AuditLog group commit', () => {
  it('writes 1000 concurrent appends as seq 1..1000 with far fewer fsyncs', async () => {
    const log = await AuditLog.open({ dir });
    await Promise.all(Array.from({ length: 1000 }, (_, i) => log.append({ type: 'task.executed', actor: `u${i}` })));
    const { events, batches, maxBatch } = log.stats();
    await log.close();

    const written = (await lines(log.path)).map((l) => JSON.parse(l) as { seq: number; actor: string });
    expect(written).toHaveLength(1000);
    expect(written.map((e) => e.seq)).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
    expect(written[999]!.actor).toBe('u999');
    expect(events).toBe(1000);
    expect(batches).toBeLessThan(50);
    expect(maxBatch).toBeGreaterThan(20);
    expect(await verifyAuditFile(log.path)).toMatchObject({ ok: true, events: 1000 });
  });

  it('appends made by separate callbacks in one event-loop turn share one write', async () => {
    const log = await AuditLog.open({ dir });
    // Ten callbacks that run in one phase of one loop turn, like ten sockets read in one poll phase
    // (immediates queued together run together; microtasks run between them).
    const appends = await new Promise<Array<Promise<void>>>((resolve) => {
      const made: Array<Promise<void>> = [];
      for (let i = 0; i < 10; i++) {
        setImmediate(() => {
          made.push(log.append({ type: 'request.created', i }));
          if (made.length === 10) resolve(made);
        });
      }
    });
    await Promise.all(appends);
    expect(log.stats()).toEqual({ events: 10, batches: 1, maxBatch: 10 });
    await log.close();
  });

  it('makes each batch durable with one O_DSYNC write to audit.wal; the live file is a plain append, synced by checkpoints', async () => {
    const { fs, calls, flagsOf } = tracedFs();
    const log = await AuditLog.open({ dir, fs, syncMode: 'o_dsync', maxBytes: 6000 });
    calls.length = 0;
    const started = performance.now();
    for (let i = 0; i < 60; i++) await log.append({ type: 'one-batch-each', pad: 'x'.repeat(200) });
    const elapsed = performance.now() - started;
    const { batches } = log.stats();
    const during = [...calls];
    await log.close();

    expect(batches).toBe(60);
    expect(during.filter((c) => c === 'write audit.wal')).toHaveLength(60);
    expect(during.filter((c) => c === 'append audit.jsonl')).toHaveLength(60);
    expect(during.filter((c) => c === 'fdatasync audit.wal')).toHaveLength(0);
    // The live file is synced by checkpoints (at most every 100 ms) and before each rotation, not per batch.
    const rotations = during.filter((c) => c === 'rename').length;
    expect(rotations).toBeGreaterThanOrEqual(2);
    expect(during.filter((c) => c === 'fdatasync audit.jsonl').length).toBeLessThanOrEqual(Math.ceil(elapsed / 100) + 1 + rotations);
    expect(flagsOf('audit.wal') & fsConstants.O_DSYNC).toBe(fsConstants.O_DSYNC);
    for (const f of flagsOf.all('audit.jsonl')) {
      expect(f & fsConstants.O_DSYNC).toBe(0);
      expect(f & fsConstants.O_APPEND).toBe(fsConstants.O_APPEND);
      expect(f & fsConstants.O_TRUNC).toBe(0);
    }
    expect(flagsOf.all('audit.jsonl').length).toBe(1 + rotations);
    expect(await verifyAuditFile(log.path)).toMatchObject({ ok: true, events: 60, segments: rotations });
  });

  it("in 'fdatasync' mode (non-Linux default) opens the WAL without O_DSYNC and resolves a batch only after its fdatasync", async () => {
    const { fs, calls, flagsOf } = tracedFs({ slowSync: 3 });
    const log = await AuditLog.open({ dir, fs, syncMode: 'fdatasync' });
    calls.length = 0;
    await Promise.all([1, 2, 3].map((i) => log.append({ type: 'x', i }).then(() => calls.push(`resolve ${i}`))));
    await log.close();
    expect(flagsOf('audit.wal') & fsConstants.O_DSYNC).toBe(0);
    // Nothing else queued: the lines go to audit.jsonl right after they are durable, before the appends resolve.
    expect(calls.slice(0, 6)).toEqual(['write audit.wal', 'fdatasync audit.wal', 'append audit.jsonl', 'resolve 1', 'resolve 2', 'resolve 3']);
  });

  it('under load appends audit.jsonl in chunks of several batches, and holds every line once nothing is queued', async () => {
    let walFd = -1;
    let liveFd = -1;
    let liveAppends = 0;
    // A slow disk, in lock step with the test: each batch's WAL write is held until the next wave
    // of appends has queued behind it (timers alone left the queue empty between batches on a slow host).
    let release: (() => void) | null = null;
    let holding = true;
    const fs: AuditFs = {
      ...nodeAuditFs,
      open: async (path, flags, mode) => {
        const fd = await nodeAuditFs.open(path, flags, mode);
        if (path.endsWith('audit.wal') && ((flags as number) & fsConstants.O_TRUNC) === 0) walFd = fd;
        if (path.endsWith('audit.jsonl')) liveFd = fd;
        return fd;
      },
      write: async (fd, buf, off, len, pos) => {
        if (fd === liveFd && pos === null) liveAppends++;
        if (fd === walFd && len > 1 && pos !== 0 && holding) await new Promise<void>((r) => (release = r));
        return nodeAuditFs.write(fd, buf, off, len, pos);
      },
    };
    // No checkpoint while the waves run: one that is due sends the next batch to audit.jsonl at once.
    const log = await AuditLog.open({ dir, fs, checkpointMs: 60_000 });
    liveAppends = 0;
    const pending: Array<Promise<void>> = [];
    const inWalWrite = async (): Promise<() => void> => {
      while (release === null) await new Promise((r) => setImmediate(r));
      const r: () => void = release;
      release = null;
      return r;
    };
    let held: (() => void) | null = null;
    for (let wave = 0; wave < 20; wave++) {
      for (let i = 0; i < 50; i++) pending.push(log.append({ type: 'request.created', pad: 'p'.repeat(300), n: pending.length + 1 }));
      held?.(); // the previous batch completes with this wave queued behind it
      held = await inWalWrite();
    }
    holding = false;
    held?.();
    await Promise.all(pending);
    const { batches } = log.stats();
    // Every acknowledged line is in the file once the load pauses, without close().
    const all = pending.map((_, i) => i + 1);
    const inFile = async (): Promise<number[]> => (await lines(log.path)).map((l) => (JSON.parse(l) as { n: number }).n);
    for (let i = 0; i < 100 && (await inFile()).length < all.length; i++) await new Promise((r) => setTimeout(r, 5));
    expect(await inFile()).toEqual(all);
    await log.close();
    expect(batches).toBeGreaterThan(3);
    expect(liveAppends).toBeGreaterThan(0);
    expect(liveAppends).toBeLessThan(batches);
    expect(await verifyAuditFile(log.path)).toMatchObject({ ok: true, events: 1000 });
  });

  it('resolves each append only after the durable write of its batch, and batches appends that arrive during one', async () => {
    let linesDurable = 0;
    const calls: string[] = [];
    let walFd = -1;
    const fs: AuditFs = {
      ...nodeAuditFs,
      open: async (path, flags, mode) => {
        const fd = await nodeAuditFs.open(path, flags, mode);
        if (path.endsWith('audit.wal') && ((flags as number) & fsConstants.O_TRUNC) === 0) walFd = fd; // not the zero-fill
        return fd;
      },
      // The WAL's O_DSYNC write is where a batch becomes durable.
      write: async (fd, buf, off, len, pos) => {
        if (fd !== walFd || len === 1 || pos === 0) return nodeAuditFs.write(fd, buf, off, len, pos); // batches, not lap headers or cuts
        await new Promise((r) => setTimeout(r, 3)); // a slow disk: appends pile up meanwhile
        const n = await nodeAuditFs.write(fd, buf, off, len, pos);
        for (let i = off; i < off + n; i++) if (buf[i] === 10) linesDurable++;
        calls.push(`write ${linesDurable}`);
        return n;
      },
    };
    const log = await AuditLog.open({ dir, fs });
    const early: number[] = [];
    const pending: Array<Promise<void>> = [];
    for (let wave = 0; wave < 10; wave++) {
      for (let i = 0; i < 100; i++) {
        const seq = pending.length + 1;
        pending.push(
          log.append({ type: 'request.created', n: seq }).then(() => {
            calls.push(`resolve ${seq}`);
            if (linesDurable < seq) early.push(seq);
          }),
        );
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    await Promise.all(pending);
    const { batches, maxBatch } = log.stats();
    await log.close();

    expect(early).toEqual([]);
    expect(calls.findIndex((c) => c.startsWith('write'))).toBeLessThan(calls.indexOf('resolve 1'));
    expect(batches).toBeGreaterThan(1);
    expect(batches).toBeLessThan(100);
    expect(maxBatch).toBeGreaterThan(1);
    expect(calls.filter((c) => c.startsWith('write'))).toHaveLength(batches); // one write per batch
    expect(await verifyAuditFile(log.path)).toMatchObject({ ok: true, events: 1000 });
  });
});

describe('AuditLog lifecycle', () => {
  it('continues the chain after close and reopen', async () => {
    const a = await AuditLog.open({ dir });
    await a.append({ type: 'gateway.started' });
    await a.append({ type: 'policy.loaded' });
    await a.close();
    const firstRun = (await lines(a.path)).map((l) => JSON.parse(l) as { seq: number; hash: string; prev: string });

    const b = await AuditLog.open({ dir });
    await b.append({ type: 'gateway.started' });
    await b.close();
    const all = (await lines(b.path)).map((l) => JSON.parse(l) as { seq: number; hash: string; prev: string; type: string });
    expect(all).toHaveLength(3);
    expect(all[2]).toMatchObject({ seq: 3, prev: firstRun[1]!.hash, type: 'gateway.started' });
    expect(await verifyAuditFile(b.path)).toEqual({ ok: true, events: 3, lastHash: all[2]!.hash });
  });

  it('keeps audit.head at 128 bytes pointing at the last durable line', async () => {
    const log = await AuditLog.open({ dir });
    await log.append({ type: 'x' });
    await log.append({ type: 'y' });
    await log.close();
    const last = JSON.parse((await lines(log.path))[1]!) as { hash: string };
    const head = await readFile(join(dir, 'audit.head'), 'latin1');
    expect(head).toHaveLength(128);
    expect(JSON.parse(head)).toEqual({ seq: 2, hash: last.hash });
  });

  it('rewrites audit.head at most every 100 ms while running, never ahead of the file', async () => {
    const { fs, calls } = tracedFs();
    const log = await AuditLog.open({ dir, fs });
    calls.length = 0;
    const started = Date.now();
    for (let i = 0; i < 30; i++) {
      await log.append({ type: 'one-batch-each', i });
      const head = await readFile(join(dir, 'audit.head'), 'latin1');
      if (head.trim() !== '') expect((JSON.parse(head) as { seq: number }).seq).toBeLessThanOrEqual(i + 1); // never ahead of the file
    }
    const elapsed = Date.now() - started;
    await new Promise((r) => setTimeout(r, 150));
    const whileRunning = calls.filter((c) => c === 'write audit.head').length;
    expect(whileRunning).toBeGreaterThanOrEqual(1);
    expect(whileRunning).toBeLessThanOrEqual(Math.ceil((elapsed + 150) / 100) + 1);
    const head = JSON.parse(await readFile(join(dir, 'audit.head'), 'latin1')) as { seq: number };
    expect(head.seq).toBe(30);
    await log.append({ type: 'last' });
    await log.close(); // flushes the pending head write
    expect(JSON.parse(await readFile(join(dir, 'audit.head'), 'latin1'))).toMatchObject({ seq: 31 });
  });

  it('close waits for queued appends and later appends reject', async () => {
    const log = await AuditLog.open({ dir });
    const queued = Array.from({ length: 5 }, (_, i) => log.append({ type: 'q', i }));
    await log.close();
    await expect(Promise.all(queued)).resolves.toBeDefined();
    await expect(log.append({ type: 'late' })).rejects.toThrow(/closed/);
    expect(await lines(log.path)).toHaveLength(5);
  });

  it('creates a missing data dir', async () => {
    const nested = join(dir, 'a', 'b');
    const log = await AuditLog.open({ dir: nested });
    await log.close();
    expect(log.path).toBe(join(nested, 'audit.jsonl'));
    expect((await stat(log.path)).size).toBe(0);
  });
});
