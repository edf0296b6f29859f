import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { link, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';

export const LOCK_FILE = 'pamgate.lock';

/** Who holds a data dir, as written in its lock file. */
export interface LockHolder {
  pid: number;
  host: string;
  /** The holder's process start time (Linux /proc/<pid>/stat field 22), to tell a reused pid. */
  start: string | null;
  since: string;
}

/** Another live process holds the data dir. */
export class DataDirLockedError extends Error {
  constructor(
    readonly lockFile: string,
    readonly holder: LockHolder,
    why: string,
  ) {
    super(
      `the data dir is in use by another pamgate process (pid ${holder.pid}${holder.host !== hostname() ? ` on host ${holder.host}` : ''}, since ${holder.since}): ${why}. ` +
        `Two processes must never share a data dir (their audit chains would fork and state would be lost): stop the other one, or give this instance its own PAMGATE_DATA_DIR. Lock file: ${lockFile}`,
    );
    this.name = 'DataDirLockedError';
    this.stack = `${this.name}: ${this.message}`; // an operator's error, not a bug: no stack trace on the console
  }
}

export interface DataDirLock {
  readonly path: string;
  /** Removes the lock file if it is still ours. */
  release(): Promise<void>;
}

/** Lock files this process holds (two gateways in one process must not share a data dir either). */
const held = new Set<string>();

/** A lock file still empty or half written this long after it was created was left by a crash. */
const UNWRITTEN_GRACE_MS = 2_000;
const ATTEMPTS = 20;

/**
 * Takes `${dir}/pamgate.lock` for this process: an exclusive create (O_EXCL) of a file naming our
 * pid. If the file exists and its pid is a live process, refuses (DataDirLockedError). If that
 * process is gone — a crash or kill -9 left the file — takes it over and logs so. A stale file is
 * first moved aside under a private name (atomic), so two processes racing for the same stale lock
 * cannot both take it: only one exclusive create succeeds.
 *
 * Liveness is judged on this host only: a lock written on another host (a data dir on a shared
 * volume, or another container with its own pid namespace) is taken as held. Remove the file by
 * hand once sure that process is gone.
 */
export async function lockDataDir(dir: string, log: Logger): Promise<DataDirLock> {
  const path = join(dir, LOCK_FILE);
  const me: LockHolder = { pid: process.pid, host: hostname(), start: processStart(process.pid), since: new Date().toISOString() };
  const mine = JSON.stringify(me) + '\n';
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    if (held.has(path)) throw new DataDirLockedError(path, me, 'this very process already runs a gateway on it');
    try {
      const fh = await open(path, 'wx', 0o600);
      try {
        await fh.writeFile(mine);
        await fh.sync();
      } catch (err) {
        await fh.close().catch(() => undefined);
        await unlink(path).catch(() => undefined);
        throw err;
      }
      await fh.close();
      held.add(path);
      return { path, release: () => release(path, mine) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }

    const found = await readHolder(path);
    if (found === 'gone') continue; // released meanwhile: try again
    if (found === 'unwritten') {
      await sleep(50); // being written by a process that just created it
      continue;
    }
    const alive = liveness(found.holder, path);
    if (alive !== null) throw new DataDirLockedError(path, found.holder, alive);

    // Stale. Move exactly that file aside; if what we moved is not what we judged (replaced by a
    // live lock in between), put it back and judge again.
    const aside = `${path}.stale-${process.pid}-${randomUUID().slice(0, 8)}`;
    try {
      await rename(path, aside);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    const moved = await readFile(aside, 'utf8').catch(() => null);
    if (moved !== found.raw) {
      await link(aside, path).catch(() => undefined); // EEXIST: a third process took it; it is theirs now
      await unlink(aside).catch(() => undefined);
      continue;
    }
    await unlink(aside).catch(() => undefined);
    log.warn({ lockFile: path, stalePid: found.holder.pid, staleSince: found.holder.since }, `took over a stale data dir lock: pid ${found.holder.pid} is no longer running (it crashed or was killed)`);
  }
  throw new Error(`could not take the data dir lock ${path} after ${ATTEMPTS} attempts (other processes keep changing it)`);
}

async function release(path: string, mine: string): Promise<void> {
  if (!held.delete(path)) return;
  // Only our own file: never remove a lock some other process wrote (e.g. after judging us stale).
  const now = await readFile(path, 'utf8').catch(() => null);
  if (now === mine) await unlink(path).catch(() => undefined);
}

type Found = { holder: LockHolder; raw: string } | 'gone' | 'unwritten';

async function readHolder(path: string): Promise<Found> {
  let raw: string;
  let mtimeMs: number;
  try {
    [raw, mtimeMs] = await Promise.all([readFile(path, 'utf8'), stat(path).then((s) => s.mtimeMs)]);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'gone';
    throw err;
  }
  const holder = parseHolder(raw);
  if (holder !== null) return { holder, raw };
  // Empty or garbled: being written right now, or left half written by a crash long ago.
  if (Date.now() - mtimeMs < UNWRITTEN_GRACE_MS) return 'unwritten';
  return { holder: { pid: 0, host: hostname(), start: null, since: new Date(mtimeMs).toISOString() }, raw };
}

function parseHolder(raw: string): LockHolder | null {
  try {
    const o = JSON.parse(raw) as Partial<LockHolder>;
    if (typeof o.pid !== 'number' || !Number.isSafeInteger(o.pid) || o.pid <= 0) return null;
    return { pid: o.pid, host: typeof o.host === 'string' ? o.host : '', start: typeof o.start === 'string' ? o.start : null, since: typeof o.since === 'string' ? o.since : '?' };
  } catch {
    return null;
  }
}

/** Why the holder must be taken as alive, or null when it is certainly gone. */
function liveness(holder: LockHolder, path: string): string | null {
  if (holder.pid === 0) return null; // never written: its creator crashed
  if (holder.host !== hostname()) return `it was taken on another host (${holder.host || 'unknown'}), where this process cannot see whether it still runs`;
  // Our own pid, but not held by us: an earlier incarnation (pid 1 in a restarted container).
  if (holder.pid === process.pid) return held.has(path) ? 'this very process holds it' : null;
  try {
    process.kill(holder.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return null;
    // EPERM: it exists, under another user: alive
  }
  // The pid is running; a different start time means the pid was reused by an unrelated process.
  const start = processStart(holder.pid);
  if (holder.start !== null && start !== null && start !== holder.start) return null;
  return 'that process is still running';
}

/** Start time of a process in clock ticks since boot (Linux), null elsewhere. */
function processStart(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces and parentheses): state is field 3, starttime field 22.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19] ?? null;
  } catch {
    return null;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
