import { openSync, closeSync, writeSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { nodeAuditFs } from '../../src/audit/fs.js';
import { AuditLog, type AuditFs } from '../../src/audit/log.js';
import { verifyAuditFile } from '../../src/audit/verify.js';
import { chainTypes as chainTypesIn } from './helpers/chain.js';
import { diskModel } from './helpers/disk-model.js';
import { faultyFs } from './helpers/faulty-fs.js';
import { namedFs } from './helpers/named-fs.js';

// Power loss against a model of what is on the disk (helpers/disk-model.ts): only what a good
// fdatasync covered survives in audit.jsonl, and a failed fdatasync loses its pages for good.
// Every acknowledged event must be in the chain after the next open(); no refused one may be.

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pamgate-power-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const chainTypes = (): Promise<string[]> => chainTypesIn(dir);

function recorder(log: AuditLog): { acked: string[]; add(type: string, pad?: number): Promise<boolean> } {
  const acked: string[] = [];
  return {
    acked,
    add: (type, pad = 100) => log.append({ type, pad: 'p'.repeat(pad) }).then(() => (acked.push(type), true), () => false),
  };
}

describe('power loss', () => {
  it('a failed sync of the live file does not let a sync queued behind it vouch for the lost pages', async () => {
    const { fs, ctl, powerLoss } = diskModel();
    const log = await AuditLog.open({ dir, fs, walBytes: 64 * 1024 });
    const { acked, add } = recorder(log);
    for (const t of ['a1', 'a2', 'a3']) await add(t);
    await sleep(200); // a checkpoint syncs them
    ctl.failNextLiveSync = 50; // the next checkpoint's sync fails, slowly
    await add('b4', 8000);
    await add('b5', 8000);
    await add('c6', 50_000); // fills the lap: its sync queues behind the failing one
    await sleep(100);
    for (let i = 0; i < 6; i++) await add(`d${i}`, 400); // new laps overwrite the WAL
    await sleep(200);
    powerLoss(dir);

    const reopened = await AuditLog.open({ dir });
    await reopened.close();
    const types = await chainTypes();
    for (const t of acked) expect(types).toContain(t);
    expect(acked).toEqual(expect.arrayContaining(['b4', 'b5', 'd5']));
    expect(await verifyAuditFile(dir)).toMatchObject({ ok: true });
  });

  it('a rotation retried after the new live file could not be opened syncs the segment before the WAL starts over', async () => {
    const { fs, ctl, powerLoss } = diskModel();
    const log = await AuditLog.open({ dir, fs, maxBytes: 3000, walBytes: 64 * 1024 });
    const { acked, add } = recorder(log);
    for (let i = 0; i < 6; i++) await add(`a${i}`);
    await sleep(150);
    ctl.failLiveOpens = 1;
    await add('big', 3000); // rotation: rename, then the open of the new file fails
    // No batch goes into the renamed segment (its lap would be based in another file): refused,
    // and the rotation is retried right after.
    expect(await add('B1', 6000)).toBe(false);
    await add('B2', 6000);
    for (const t of ['C1', 'C2', 'C3']) await add(t, 6000);
    await sleep(250);
    powerLoss(dir);

    const reopened = await AuditLog.open({ dir, walBytes: 64 * 1024 });
    await reopened.close();
    expect(await chainTypes()).toEqual(expect.arrayContaining(acked));
    expect(acked).toContain('B2');
    expect(await verifyAuditFile(dir)).toMatchObject({ ok: true });
  });

  it('lines lost from the middle of the unsynced part (writeback out of order) come back from the WAL', async () => {
    const log = await AuditLog.open({ dir });
    for (let i = 0; i < 20; i++) await log.append({ type: `e${i}`, pad: 'p'.repeat(300) });
    // Crash with the live file's second page never written back, later pages (and the size) on disk.
    const fd = openSync(join(dir, 'audit.jsonl'), 'r+');
    writeSync(fd, Buffer.alloc(4096), 0, 4096, 4096);
    closeSync(fd);

    const reopened = await AuditLog.open({ dir });
    expect(reopened.restoredLines).toBeGreaterThan(0);
    await reopened.close();
    expect(await chainTypes()).toEqual(Array.from({ length: 20 }, (_, i) => `e${i}`));
    expect(await verifyAuditFile(dir)).toMatchObject({ ok: true, events: 20 });
  });

  it('a refused batch whose cut-back failed is not made durable by close(), and is dropped (on record) at the next open', async () => {
    // Only a batch larger than the whole WAL is written to audit.jsonl before it is durable: the
    // live file is synced (passes), the batch appended to it, and synced again (fails).
    const { fs: faulty, faults } = faultyFs();
    let liveFd = -1;
    let liveSyncs = 0;
    const fs: AuditFs = {
      ...faulty,
      open: async (path, flags, mode) => {
        const fd = await faulty.open(path, flags, mode);
        if (path.endsWith('audit.jsonl')) liveFd = fd;
        return fd;
      },
      fdatasync: async (fd) => {
        if (fd === liveFd && faults.truncate && ++liveSyncs > 1) throw Object.assign(new Error('EIO: live fdatasync'), { code: 'EIO' });
        return faulty.fdatasync(fd);
      },
    };
    const log = await AuditLog.open({ dir, fs, walBytes: 1024 });
    await log.append({ type: 'ok' });
    await new Promise((r) => setTimeout(r, 50)); // the checkpoint after it has synced
    faults.truncate = true;
    await expect(log.append({ type: 'REFUSED', pad: 'r'.repeat(2000) })).rejects.toThrow(/EIO/);
    await log.close();

    const reopened = await AuditLog.open({ dir });
    await reopened.append({ type: 'next' });
    await reopened.close();
    expect(await chainTypes()).toEqual(['ok', 'audit.repaired', 'next']);
    const repaired = (await readFile(join(dir, 'audit.jsonl'), 'utf8')).split('\n')[1]!;
    expect(JSON.parse(repaired)).toMatchObject({ type: 'audit.repaired', dropped: expect.stringContaining('"type":"REFUSED"') });
    expect(await verifyAuditFile(dir)).toMatchObject({ ok: true, events: 3 });
  });
});


/**
 * node:fs that remembers what the last good fdatasync of audit.jsonl made durable (a power loss
 * keeps only that), and lets a test fail chosen writes: `fail` returns an error to throw, or null.
 */
function durableImageFs(fail: (file: string, len: number, pos: number | null) => Error | null): { fs: AuditFs; image(): Buffer } {
  const { fs: named, fileOf } = namedFs(nodeAuditFs);
  let image = Buffer.alloc(0);
  const fs: AuditFs = {
    ...named,
    write: async (fd, buf, off, len, pos) => {
      const err = fail(fileOf(fd), len, pos);
      if (err !== null) throw err;
      return nodeAuditFs.write(fd, buf, off, len, pos);
    },
    fdatasync: async (fd) => {
      await nodeAuditFs.fdatasync(fd);
      if (fileOf(fd) === 'audit.jsonl') image = await readFile(join(dir, 'audit.jsonl'));
    },
  };
  return { fs, image: () => image };
}

describe('power loss after a refused batch larger than the WAL', () => {
  it('a lap start it could not make is redone at the last acknowledged line, so later batches survive the crash', async () => {
    let armed = false;
    let failHeader = false;
    const { fs, image } = durableImageFs((file, len, pos) => {
      if (file === 'audit.jsonl' && pos === null && len > 3000 && armed) [armed, failHeader] = [false, true];
      if (file !== 'audit.wal' || pos !== 0 || !failHeader) return null;
      failHeader = false; // the big batch's own lap start fails, once
      return Object.assign(new Error('ENOSPC: lap header'), { code: 'ENOSPC' });
    });
    const log = await AuditLog.open({ dir, fs, walBytes: 4096 });
    await log.append({ type: 'a1' });
    await new Promise((r) => setTimeout(r, 150)); // its checkpoint has run
    armed = true;
    const big = Array.from({ length: 10 }, (_, i) => log.append({ type: `BIG${i}`, pad: 'x'.repeat(400) }));
    for (const p of big) await expect(p).rejects.toThrow(/ENOSPC/);
    for (const type of ['b1', 'b2', 'b3']) await log.append({ type });
    // Power loss now: audit.jsonl is what its last sync made durable; b1–b3 must come from the WAL.
    await writeFile(join(dir, 'audit.jsonl'), image());
    const reopened = await AuditLog.open({ dir });
    await reopened.close();
    expect(await chainTypes()).toEqual(['a1', 'b1', 'b2', 'b3']);
    expect(await verifyAuditFile(dir)).toMatchObject({ ok: true, events: 4 });
  });
});

describe('power loss after a lap start that failed', () => {
  it('the WAL cut after it ends the old lap where it ends instead of wiping it, so open() keeps every acknowledged line', async () => {
    let armed = false;
    const { fs, image } = durableImageFs((file, _len, pos) => {
      if (!armed || file !== 'audit.wal' || pos !== 0) return null;
      armed = false; // the next lap's header write fails, once
      return Object.assign(new Error('EIO: lap header'), { code: 'EIO' });
    });
    const log = await AuditLog.open({ dir, fs, walBytes: 4096 });
    armed = true;
    const acked: string[] = [];
    let refused = 0;
    for (let i = 0; i < 60 && refused === 0; i++) {
      await log.append({ type: `e${i}`, pad: 'p'.repeat(100) }).then(() => acked.push(`e${i}`), () => refused++);
    }
    expect(refused).toBe(1); // the batch that found the lap full
    expect(acked.length).toBeGreaterThan(3);
    await writeFile(join(dir, 'audit.jsonl'), image()); // power loss now
    const reopened = await AuditLog.open({ dir });
    await reopened.close();
    expect(await chainTypes()).toEqual(acked);
    expect(await verifyAuditFile(dir)).toMatchObject({ ok: true, events: acked.length });
  });
});

describe('a batch larger than the WAL whose lap start wrote its header but not the NUL after it', () => {
  // The batch is durable in audit.jsonl and the header naming its end is durable in the WAL: it is
  // recorded, whatever the failed NUL says (the NUL is owed as a WAL cut before the next batch).
  async function bigBatchThenFailedNul(alsoFailNextLiveSync: boolean): Promise<{ log: AuditLog; image(): Buffer; big: string[] }> {
    let armed = false;
    let nulFailed = false;
    let failSync = false;
    let failNul = false;
    const { fs: base, image } = durableImageFs((file, len, pos) => {
      if (file === 'audit.jsonl' && pos === null && len > 3000 && armed) [armed, failNul] = [false, true];
      if (!failNul || file !== 'audit.wal' || pos !== 512 || len !== 1) return null;
      failNul = false; // the NUL of the lap start after the big batch fails, once
      nulFailed = true;
      failSync = alsoFailNextLiveSync;
      return Object.assign(new Error('EIO: lap NUL'), { code: 'EIO' });
    });
    const fs: AuditFs = {
      ...base,
      fdatasync: async (fd) => {
        if (failSync && nulFailed) {
          failSync = false; // the next sync of either file fails, once
          throw Object.assign(new Error('EIO: fdatasync'), { code: 'EIO' });
        }
        return base.fdatasync(fd);
      },
    };
    const log = await AuditLog.open({ dir, fs, walBytes: 4096, syncMode: 'o_dsync' });
    await log.append({ type: 'a1' });
    await sleep(150);
    armed = true;
    const big = Array.from({ length: 10 }, (_, i) => `BIG${i}`);
    await Promise.all(big.map((type) => log.append({ type, pad: 'x'.repeat(400) })));
    expect(nulFailed).toBe(true);
    return { log, image, big };
  }

  it('is acknowledged, later batches go on, and all of it survives a power cut', async () => {
    const { log, image, big } = await bigBatchThenFailedNul(false);
    for (const type of ['b1', 'b2']) await log.append({ type });
    await writeFile(join(dir, 'audit.jsonl'), image()); // power loss now
    const reopened = await AuditLog.open({ dir });
    await reopened.close();
    expect(await chainTypes()).toEqual(['a1', ...big, 'b1', 'b2']);
    expect(await verifyAuditFile(dir)).toMatchObject({ ok: true, events: 13 });
  });

  it('a failed sync after it is repaired from the WAL instead of refusing every later batch', async () => {
    const { log, image, big } = await bigBatchThenFailedNul(true);
    await sleep(150); // a checkpoint's sync fails
    const later: boolean[] = [];
    for (const type of ['b1', 'b2', 'b3']) later.push(await log.append({ type }).then(() => true, () => false));
    expect(later.slice(1)).toEqual([true, true]);
    await sleep(150);
    await writeFile(join(dir, 'audit.jsonl'), image()); // power loss now
    const reopened = await AuditLog.open({ dir });
    await reopened.close();
    const types = await chainTypes();
    expect(types.slice(0, 11)).toEqual(['a1', ...big]);
    expect(types).toEqual(expect.arrayContaining(['b2', 'b3']));
    expect(await verifyAuditFile(dir)).toMatchObject({ ok: true });
  });
});

describe('a rotation whose directory sync failed', () => {
  it('starts no batch in the WAL before a lap based on the new file, so a failed sync after it neither wedges the log nor loses lines', async () => {
    const { fs, ctl, powerLoss } = diskModel();
    const log = await AuditLog.open({ dir, fs, maxBytes: 3000, walBytes: 64 * 1024 });
    const { acked, add } = recorder(log);
    for (let i = 0; i < 4; i++) await add(`a${i}`);
    let dirSyncs = 2; // the sync after the rename and the one after the new file fail
    let liveSyncs = 0;
    ctl.fault = (op, file) => {
      if (op === 'syncDir' && dirSyncs > 0) return dirSyncs--, Object.assign(new Error('EIO: dir fsync'), { code: 'EIO' });
      // Once the directory is good again, the first sync of the new live file fails too.
      if (op === 'fdatasync' && file === 'audit.jsonl' && dirSyncs === 0 && liveSyncs++ === 0) return Object.assign(new Error('EIO: fdatasync'), { code: 'EIO' });
      return null;
    };
    await add('big', 3000); // rotation after it
    for (let i = 0; i < 8; i++) await add(`b${i}`);
    await sleep(150);
    for (let i = 0; i < 4; i++) await add(`c${i}`);
    expect(acked.slice(-4)).toEqual(['c0', 'c1', 'c2', 'c3']);
    await sleep(150);
    powerLoss(dir);
    const reopened = await AuditLog.open({ dir });
    await reopened.close();
    const types = await chainTypes();
    for (const t of acked) expect(types).toContain(t);
    expect(await verifyAuditFile(dir)).toMatchObject({ ok: true });
  });

  it('a refused batch on the new file whose cut-back sync failed is repaired without a lap of that file', async () => {
    const { fs, ctl, powerLoss } = diskModel();
    const log = await AuditLog.open({ dir, fs, maxBytes: 3000, walBytes: 64 * 1024 });
    const { acked, add } = recorder(log);
    for (let i = 0; i < 4; i++) await add(`a${i}`);
    // After the rename (the next batch is refused: no new file yet), after the new file, and in the
    // lap start of the batch after that (refused too).
    let dirSyncs = 3;
    let liveSyncs = 0;
    ctl.fault = (op, file) => {
      if (op === 'syncDir' && dirSyncs > 0) return dirSyncs--, Object.assign(new Error('EIO: dir fsync'), { code: 'EIO' });
      // The cut-back after that refused batch fails its sync: the empty new file is to be "restored".
      if (op === 'fdatasync' && file === 'audit.jsonl' && dirSyncs === 0 && liveSyncs++ === 0) return Object.assign(new Error('EIO: fdatasync'), { code: 'EIO' });
      return null;
    };
    await add('big', 3000); // rotation after it
    await sleep(20);
    // The refusal names the step that failed (the rename is done, the directory sync is not).
    await expect(log.append({ type: 'REFUSED1' })).rejects.toThrow('audit rotation could not make the directory durable after renaming audit.jsonl to a segment');
    expect(await add('REFUSED2')).toBe(false);
    expect([dirSyncs, liveSyncs]).toEqual([0, 1]);
    for (let i = 0; i < 4; i++) await add(`c${i}`);
    expect(acked.slice(-4)).toEqual(['c0', 'c1', 'c2', 'c3']);
    powerLoss(dir);
    const reopened = await AuditLog.open({ dir });
    await reopened.close();
    expect(await chainTypes()).toEqual(['a0', 'a1', 'a2', 'a3', 'big', 'c0', 'c1', 'c2', 'c3']);
    expect(await verifyAuditFile(dir)).toMatchObject({ ok: true, events: 9 });
  });
});

describe('a checkpoint while a batch larger than the WAL waits for its lap start', () => {
  it('does not point audit.head at the batch, which the failed lap start then refuses', async () => {
    const { fs: model, crash } = diskModel();
    const { fs: named, fileOf } = namedFs(model);
    let armed = false;
    let failHeader = false;
    const fs: AuditFs = {
      ...named,
      write: async (fd, buf, off, len, pos) => {
        if (armed && fileOf(fd) === 'audit.jsonl' && pos === null && len > 3000) [armed, failHeader] = [false, true];
        if (failHeader && fileOf(fd) === 'audit.wal' && pos === 0) {
          failHeader = false; // the big batch's own lap start: slow enough for a checkpoint, then it fails
          await sleep(250);
          throw Object.assign(new Error('EIO: lap header'), { code: 'EIO' });
        }
        return model.write(fd, buf, off, len, pos);
      },
    };
    const log = await AuditLog.open({ dir, fs, walBytes: 4096 });
    await log.append({ type: 'a1' }); // its checkpoint runs at once
    await log.append({ type: 'a2' }); // its checkpoint is due 100 ms after a1's: during the lap start below
    armed = true;
    const big = Array.from({ length: 10 }, (_, i) => log.append({ type: `BIG${i}`, pad: 'x'.repeat(400) }));
    for (const p of big) await expect(p).rejects.toThrow(/EIO/);
    await crash(); // kill -9 right after the refusal
    const reopened = await AuditLog.open({ dir });
    await reopened.close();
    expect(await chainTypes()).toEqual(['a1', 'a2']);
    expect(await verifyAuditFile(dir)).toMatchObject({ ok: true, events: 2 });
  });
});
