import * as nodeFs from 'node:fs';
import { nodeAuditFs, type AuditFs } from '../../../src/audit/fs.js';

const PAGE = 4096;

interface Disk {
  image: Buffer;
  dirty: Set<number>;
}

export type DiskOp = 'open' | 'write' | 'fdatasync' | 'ftruncate' | 'rename' | 'syncDir';

export interface DiskControl {
  /** The next fdatasync of audit.jsonl fails after this many ms, Linux-style: its dirty pages are marked clean but never written. */
  failNextLiveSync: number | null;
  /** Opens of audit.jsonl that fail (EMFILE) before they work again. */
  failLiveOpens: number;
  /**
   * Asked before every operation (file: the name it acts on); an error it returns is thrown and
   * the operation is not done. A failed fdatasync of a .jsonl file drops its dirty pages. 'short'
   * makes a write of more than one byte write only its first half (and say so, as write(2) may).
   */
  fault: ((op: DiskOp, file: string) => Error | 'short' | null) | null;
  /** Told of every operation as it ends (for debugging a fuzz seed). */
  trace: ((line: string) => void) | null;
}

/**
 * node:fs for the audit writer, plus a model of what is on the *disk* for each .jsonl file: pages
 * written since the last good fdatasync are only in the page cache. A failed fdatasync drops them
 * (Linux reports the error once and marks the pages clean; the next fdatasync succeeds). `powerLoss`
 * then replaces each .jsonl file by its disk image. audit.wal is written O_DSYNC and needs no model.
 * `crash` stops the writer dead: nothing it starts after that runs, nothing in flight returns to it.
 */
export function diskModel(): { fs: AuditFs; ctl: DiskControl; powerLoss(dir: string): void; crash(): Promise<void> } {
  const names = new Map<number, string>();
  const paths = new Map<number, string>();
  const disks = new Map<string, Disk>();
  const ctl: DiskControl = { failNextLiveSync: null, failLiveOpens: 0, fault: null, trace: null };
  let crashed = false;
  let inFlight = 0;
  const disk = (name: string): Disk => {
    let d = disks.get(name);
    if (d === undefined) disks.set(name, (d = { image: Buffer.alloc(0), dirty: new Set() }));
    return d;
  };
  const touch = (name: string, from: number, to: number): void => {
    for (let p = Math.floor(from / PAGE); p <= Math.floor(Math.max(from, to - 1) / PAGE); p++) disk(name).dirty.add(p);
  };
  const injected = (op: DiskOp, file: string): 'short' | null => {
    const err = ctl.fault?.(op, file) ?? null;
    if (err === null || err === 'short') return err;
    if (op === 'fdatasync' && file.endsWith('.jsonl')) disk(file).dirty.clear();
    throw err;
  };
  // Every operation runs through here: after a crash it never starts, and never returns.
  const guarded = <A extends unknown[], R>(op: string, run: (...args: A) => Promise<R>) => async (...args: A): Promise<R> => {
    if (crashed) return new Promise<R>(() => undefined);
    inFlight++;
    const what = (): string => `${op} ${args.map((a) => (typeof a === 'number' ? (names.get(a) ?? a) : Buffer.isBuffer(a) ? `[${a.length}]` : String(a).split('/').at(-1))).join(' ')}`;
    try {
      const result = await run(...args);
      ctl.trace?.(`${what()} -> ${String(result)}`);
      if (crashed) return new Promise<R>(() => undefined);
      return result;
    } catch (err) {
      ctl.trace?.(`${what()} !! ${(err as Error).message}`);
      throw err;
    } finally {
      inFlight--;
    }
  };
  const fs: AuditFs = {
    open: guarded('open', async (path: string, flags: string | number, mode: number) => {
      const name = path.split('/').at(-1)!;
      if (name === 'audit.jsonl' && ctl.failLiveOpens > 0) {
        ctl.failLiveOpens--;
        throw Object.assign(new Error('EMFILE: injected'), { code: 'EMFILE' });
      }
      injected('open', name);
      const fd = await nodeAuditFs.open(path, flags, mode);
      names.set(fd, name);
      paths.set(fd, path);
      if (name.endsWith('.jsonl') && !disks.has(name)) disk(name).image = nodeFs.readFileSync(path);
      return fd;
    }),
    write: guarded('write', async (fd: number, buf: Buffer, off: number, len: number, pos: number | null) => {
      const name = names.get(fd) ?? '';
      if (injected('write', name) === 'short' && len > 1) len = Math.floor(len / 2);
      if (!name.endsWith('.jsonl')) return nodeAuditFs.write(fd, buf, off, len, pos);
      const at = pos ?? nodeFs.fstatSync(fd).size;
      touch(name, at, at + len);
      const written = await nodeAuditFs.write(fd, buf, off, len, pos);
      // Again once the bytes are in: a sync that read the file before they landed cleared the pages.
      touch(name, at, at + len);
      return written;
    }),
    ftruncate: guarded('ftruncate', async (fd: number, length: number) => {
      const name = names.get(fd) ?? '';
      injected('ftruncate', name);
      if (name.endsWith('.jsonl')) touch(name, length, length + 1);
      return nodeAuditFs.ftruncate(fd, length);
    }),
    fdatasync: guarded('fdatasync', async (fd: number) => {
      const name = names.get(fd) ?? '';
      injected('fdatasync', name);
      if (!name.endsWith('.jsonl')) return nodeAuditFs.fdatasync(fd);
      const d = disk(name);
      if (name === 'audit.jsonl' && ctl.failNextLiveSync !== null) {
        const delay = ctl.failNextLiveSync;
        ctl.failNextLiveSync = null;
        await new Promise((r) => setTimeout(r, delay));
        d.dirty.clear();
        throw Object.assign(new Error('EIO: injected live fdatasync'), { code: 'EIO' });
      }
      await nodeAuditFs.fdatasync(fd);
      // Linux-like: what the sync found written is on the disk (possibly more than it was asked for).
      const now = nodeFs.readFileSync(paths.get(fd)!);
      const image = Buffer.alloc(now.length);
      d.image.copy(image, 0, 0, Math.min(d.image.length, now.length));
      for (const p of d.dirty) if (p * PAGE < now.length) now.copy(image, p * PAGE, p * PAGE, Math.min(now.length, (p + 1) * PAGE));
      d.image = image;
      d.dirty.clear();
    }),
    close: guarded('close', async (fd: number) => {
      names.delete(fd);
      paths.delete(fd);
      return nodeAuditFs.close(fd);
    }),
    rename: guarded('rename', async (from: string, to: string) => {
      const a = from.split('/').at(-1)!;
      const b = to.split('/').at(-1)!;
      injected('rename', a);
      disks.set(b, disk(a));
      disks.delete(a);
      for (const [fd, n] of names) if (n === a) (names.set(fd, b), paths.set(fd, to));
      return nodeAuditFs.rename!(from, to);
    }),
    syncDir: guarded('syncDir', async (dir: string) => {
      injected('syncDir', dir);
      return nodeAuditFs.syncDir!(dir);
    }),
  };
  const powerLoss = (dir: string): void => {
    for (const name of nodeFs.readdirSync(dir)) {
      // A file this model never opened was not written through it: it is on the disk as it is.
      const d = disks.get(name);
      if (name.endsWith('.jsonl') && d !== undefined) nodeFs.writeFileSync(`${dir}/${name}`, d.image);
    }
  };
  const crash = async (): Promise<void> => {
    crashed = true;
    while (inFlight > 0) await new Promise((r) => setTimeout(r, 2));
    for (const fd of names.keys()) nodeFs.closeSync(fd);
    names.clear();
  };
  return { fs, ctl, powerLoss, crash };
}
