import { statfs } from 'node:fs/promises';
import type { Logger } from 'pino';

/**
 * Free space on the audit file's disk against a watermark: an early alarm, well before a full disk
 * makes the audit file refuse writes (and every gated task answer 503). Below the watermark the
 * gateway warns, /metrics shows it and /readyz fails; gated traffic goes on being decided and
 * recorded while the disk still takes writes.
 */
export interface DiskSpace {
  freeBytes: number;
  totalBytes: number;
}

export type StatFs = (dir: string) => Promise<DiskSpace>;

/** Space an unprivileged process may use (f_bavail), like `df`'s Avail. */
export const nodeStatFs: StatFs = async (dir) => {
  const s = await statfs(dir);
  return { freeBytes: s.bavail * s.bsize, totalBytes: s.blocks * s.bsize };
};

/** The watermark: a size in bytes, or a share of the disk. */
export type MinFree = { bytes: number } | { percent: number };

const GIB = 1024 ** 3;
/** Without a setting: 1 GiB, or 5 % of the disk when that is less (a small disk is not low from the start). */
const DEFAULT_BYTES = GIB;
const DEFAULT_PERCENT = 5;
export const DEFAULT_DISK_CHECK_MS = 10_000;

const UNITS: Record<string, number> = { '': 1, k: 1024, kib: 1024, m: 1024 ** 2, mib: 1024 ** 2, g: GIB, gib: GIB, t: 1024 ** 4, tib: 1024 ** 4 };

/** `PAMGATE_AUDIT_MIN_FREE`: bytes (`1073741824`, `512MiB`, `2G`), a share of the disk (`5%`), or `0` (no watermark). */
export function parseMinFree(text: string, name = 'PAMGATE_AUDIT_MIN_FREE'): MinFree {
  const t = text.trim().toLowerCase();
  const percent = /^(\d+(?:\.\d+)?)\s*%$/.exec(t);
  if (percent) {
    const p = Number(percent[1]);
    if (p > 100) throw new RangeError(`${name} must be at most 100%, got "${text}"`);
    return { percent: p };
  }
  const size = /^(\d+)\s*([a-z]*)$/.exec(t);
  const unit = size && Object.hasOwn(UNITS, size[2]!) ? UNITS[size[2]!] : undefined;
  if (!size || unit === undefined) throw new RangeError(`${name} must be bytes (e.g. 1073741824, 512MiB, 2GiB) or a percentage of the disk (e.g. 5%), got "${text}"`);
  const bytes = Number(size[1]) * unit;
  if (!Number.isSafeInteger(bytes)) throw new RangeError(`${name} is too large: "${text}"`);
  return { bytes };
}

export function watermarkBytes(minFree: MinFree | undefined, totalBytes: number): number {
  if (minFree === undefined) return Math.min(DEFAULT_BYTES, Math.floor((totalBytes * DEFAULT_PERCENT) / 100));
  return 'bytes' in minFree ? minFree.bytes : Math.floor((totalBytes * minFree.percent) / 100);
}

export interface DiskState {
  dir: string;
  freeBytes: number;
  totalBytes: number;
  minFreeBytes: number;
  low: boolean;
}

export interface DiskWatchOptions {
  dir: string;
  minFree?: MinFree | undefined;
  intervalMs?: number | undefined;
  statfs?: StatFs | undefined;
  log: Logger;
}

export class DiskWatch {
  readonly #dir: string;
  readonly #minFree: MinFree | undefined;
  readonly #intervalMs: number;
  readonly #statfs: StatFs;
  readonly #log: Logger;
  #state: DiskState | null = null;
  #timer: NodeJS.Timeout | null = null;
  #checking: Promise<DiskState | null> | null = null;
  #failed = false;

  constructor(opts: DiskWatchOptions) {
    this.#dir = opts.dir;
    this.#minFree = opts.minFree;
    this.#intervalMs = opts.intervalMs ?? DEFAULT_DISK_CHECK_MS;
    this.#statfs = opts.statfs ?? nodeStatFs;
    this.#log = opts.log;
  }

  /** The last reading; null before the first, or when the disk could not be read. */
  get state(): DiskState | null {
    return this.#state;
  }

  /** Reads the disk now, then every intervalMs. */
  async start(): Promise<void> {
    await this.check();
    this.#timer = setInterval(() => void this.check(), this.#intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** One statfs; concurrent callers share it. Never rejects. */
  check(): Promise<DiskState | null> {
    this.#checking ??= this.#read().finally(() => {
      this.#checking = null;
    });
    return this.#checking;
  }

  /** Why /readyz should fail, or null. */
  reason(): string | null {
    const s = this.#state;
    if (s === null || !s.low) return null;
    return `${formatBytes(s.freeBytes)} free on the audit disk (${s.dir}), below the ${formatBytes(s.minFreeBytes)} watermark (PAMGATE_AUDIT_MIN_FREE); gated tasks are refused (503) once the disk is full`;
  }

  async #read(): Promise<DiskState | null> {
    let space: DiskSpace;
    try {
      space = await this.#statfs(this.#dir);
    } catch (err) {
      if (!this.#failed) this.#log.warn({ err, dir: this.#dir }, 'cannot read free space of the audit disk');
      this.#failed = true;
      this.#state = null;
      return null;
    }
    this.#failed = false;
    const minFreeBytes = watermarkBytes(this.#minFree, space.totalBytes);
    const low = space.freeBytes < minFreeBytes;
    const was = this.#state?.low ?? false;
    this.#state = { dir: this.#dir, freeBytes: space.freeBytes, totalBytes: space.totalBytes, minFreeBytes, low };
    if (low && !was) {
      this.#log.warn({ dir: this.#dir, freeBytes: space.freeBytes, minFreeBytes }, 'audit disk below its free-space watermark: free space, or rotate and prune audit segments (PAMGATE_AUDIT_RETENTION_DAYS), before it fills and gated tasks are refused');
    } else if (!low && was) {
      this.#log.info({ dir: this.#dir, freeBytes: space.freeBytes, minFreeBytes }, 'audit disk back above its free-space watermark');
    }
    return this.#state;
  }
}

function formatBytes(n: number): string {
  if (n >= GIB) return `${(n / GIB).toFixed(1)} GiB`;
  if (n >= 1024 ** 2) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${n} bytes`;
}
