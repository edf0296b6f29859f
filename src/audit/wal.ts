import { constants as fsConstants } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { AuditFs } from './fs.js';
import { computedHash, isRecord, parseStoredLine } from './line.js';

/**
 * audit.wal is where a batch becomes durable. It is a fixed-size, zero-filled file that batches
 * overwrite in place, one positional write each (O_DSYNC, or write + fdatasync). Rewriting blocks
 * that are already allocated and written makes the sync a data write and a cache flush, with no
 * file-size change for the filesystem to journal: on ext4 it took about half the time and half
 * the CPU of a durable append of the same bytes (bench/disk.mjs, docs/design/002-audit-write-ahead-log.md). The very same bytes go to
 * audit.jsonl afterwards as a plain append, which a checkpoint makes durable (see log.ts); the WAL
 * only has to hold what came after the last checkpoint.
 *
 * A *lap* starts only once audit.jsonl is durable up to its last acknowledged line: a header naming
 * that base (where audit.jsonl ended, in bytes, and the seq and hash of its last line) is written
 * durably, alone, into the first sector, and batches follow from LAP_DATA on, contiguously. So
 * the header on disk always describes the lap the batches after it belong to, and no batch write
 * touches it. After a crash, audit.jsonl from the base on must read as the lap's lines (each
 * verified and chained on the one before): open() checks the base is still there and rewrites what
 * follows it (log.ts, recover.ts).
 */
export const WAL_FILE = 'audit.wal';
export const DEFAULT_WAL_BYTES = 16 * 1024 * 1024;

export type WalSyncMode = 'o_dsync' | 'fdatasync';

const ZERO_CHUNK = 1024 * 1024;
const NUL: Buffer = Buffer.alloc(1);
/** Upper bound of a header line's length: `{"lap":1,"liveOffset":<≤16 digits>,"seq":<≤16>,"hash":"<64>"}\n`. */
export const LAP_HEADER_MAX = 160;
/** Where a lap's batches start: past the header's sector, so that no batch write can tear the header. */
export const LAP_DATA = 512;

/** Where audit.jsonl stood, durably, when a lap began. */
export interface LapBase {
  liveOffset: number;
  seq: number;
  hash: string;
}

export class Wal {
  readonly #fs: AuditFs;
  readonly #fd: number;
  readonly #size: number;
  readonly #syncMode: WalSyncMode;
  #offset = LAP_DATA;
  #lapBase: LapBase | null = null;

  private constructor(fs: AuditFs, fd: number, size: number, syncMode: WalSyncMode) {
    this.#fs = fs;
    this.#fd = fd;
    this.#size = size;
    this.#syncMode = syncMode;
  }

  /**
   * Opens the WAL of `size` bytes, zero-filling it first when it is missing or has another size.
   * Only call this after the previous lap has been replayed into audit.jsonl and synced: a resize
   * wipes it.
   */
  static async open(fs: AuditFs, path: string, size: number, syncMode: WalSyncMode, currentSize: number | null): Promise<Wal> {
    if (currentSize !== size) await zeroFill(fs, path, size);
    const flags = fsConstants.O_WRONLY | (syncMode === 'o_dsync' ? fsConstants.O_DSYNC : 0);
    const fd = await fs.open(path, flags, 0o600);
    return new Wal(fs, fd, size, syncMode);
  }

  /** The base of the last lap whose header was written durably (its NUL may still be owed: see cut()). */
  get lapBase(): LapBase | null {
    return this.#lapBase;
  }

  /** Whether `bytes` more fit in this lap; a batch that never fits in a lap is larger than this. */
  fits(bytes: number): boolean {
    return this.#offset + bytes <= this.#size;
  }

  /**
   * Starts a new, empty lap based at `base`: one durable write of the header's sector. Only once
   * audit.jsonl is durable up to `base`, the last acknowledged line. Until it returns, the old lap
   * (or, if it fails, whatever it left) is what a restart sees; the caller must not write batches.
   */
  async startLap(base: LapBase): Promise<void> {
    const block = Buffer.alloc(LAP_DATA);
    block.write(JSON.stringify({ lap: 1, liveOffset: base.liveOffset, seq: base.seq, hash: base.hash }) + '\n', 0, 'latin1');
    // The offset moves only once the header is written: after a failed header write the old lap is
    // what a restart reads, and a cut must end it where it ends, not wipe its lines at LAP_DATA.
    await this.#writeAt(block, 0);
    this.#offset = LAP_DATA;
    this.#lapBase = base;
    // A NUL where the first line would go: the previous lap's lines there do not chain on this base anyway.
    await this.#writeAt(NUL, LAP_DATA);
  }

  /** Writes `buf` at the lap's next offset and returns once it is on stable storage. */
  async write(buf: Buffer): Promise<void> {
    await this.#writeAt(buf, this.#offset);
    this.#offset += buf.length;
  }

  async #writeAt(buf: Buffer, at: number): Promise<void> {
    let off = 0;
    while (off < buf.length) {
      const written = await this.#fs.write(this.#fd, buf, off, buf.length - off, at + off);
      if (written <= 0) throw new Error('audit WAL write made no progress');
      off += written;
    }
    if (this.#syncMode === 'fdatasync') await this.#fs.fdatasync(this.#fd);
  }

  /**
   * Makes the lap end at the current offset, durably: a NUL where the next line would start. After a
   * failed write, the lines of the refused batch that did reach the disk can then never be replayed.
   */
  cut(): Promise<void> {
    return this.#writeAt(NUL, this.#offset);
  }

  close(): Promise<void> {
    return this.#fs.close(this.#fd);
  }
}

async function zeroFill(fs: AuditFs, path: string, size: number): Promise<void> {
  const fd = await fs.open(path, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_TRUNC, 0o600);
  try {
    const zeros = Buffer.alloc(Math.min(ZERO_CHUNK, size));
    for (let at = 0; at < size; ) {
      const written = await fs.write(fd, zeros, 0, Math.min(zeros.length, size - at), at);
      if (written <= 0) throw new Error('audit WAL zero-fill made no progress');
      at += written;
    }
    await fs.fdatasync(fd);
  } finally {
    await fs.close(fd);
  }
}

/** The WAL's bytes, or null when there is none. */
export async function readWal(path: string): Promise<Buffer | null> {
  try {
    return await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

interface LapLine {
  seq: number;
  hash: string;
  prev: string;
}

/** A lap as read back: its base, its lines' bytes (from the first line to the last line's end), and where its chain ends. */
export interface Lap {
  base: LapBase;
  bytes: Buffer;
  lines: number;
  seq: number;
  hash: string;
}

/** The lap at offset 0: a valid header, then lines that each verify and chain on, from the base. Null without a header. */
export function readLap(wal: Buffer): Lap | null {
  const headerEnd = wal[0] === 0x7b ? wal.subarray(0, LAP_HEADER_MAX).indexOf(10) : -1;
  if (headerEnd === -1 || wal.length < LAP_DATA) return null;
  const base = parseHeader(wal.subarray(0, headerEnd));
  if (base === null) return null;
  let { seq, hash } = base;
  let lines = 0;
  let at = LAP_DATA;
  while (at < wal.length && wal[at] === 0x7b) {
    const nl = wal.indexOf(10, at);
    if (nl === -1) break;
    const line = verifiedLine(wal.subarray(at, nl));
    if (line === null || line.seq !== seq + 1 || line.prev !== hash) break;
    ({ seq, hash } = line);
    lines++;
    at = nl + 1;
  }
  return { base, bytes: wal.subarray(LAP_DATA, at), lines, seq, hash };
}

function parseHeader(raw: Buffer): LapBase | null {
  let obj: unknown;
  try {
    obj = JSON.parse(raw.toString('latin1'));
  } catch {
    return null;
  }
  if (!isRecord(obj) || obj['lap'] !== 1) return null;
  const { liveOffset, seq, hash } = obj;
  if (typeof liveOffset !== 'number' || !Number.isSafeInteger(liveOffset) || liveOffset < 0) return null;
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0) return null;
  if (typeof hash !== 'string' || !/^[0-9a-f]{64}$/.test(hash)) return null;
  return { liveOffset, seq, hash };
}

/** A stored line whose hash is right (recomputed), with what it chains on. */
function verifiedLine(raw: Buffer): LapLine | null {
  const line = parseStoredLine(raw);
  if (line === null || typeof line.prev !== 'string' || computedHash(raw) !== line.hash) return null;
  return { seq: line.seq, hash: line.hash, prev: line.prev };
}

/**
 * The lines of the lap after a chain position (seq, hash) inside it: what a file ending there
 * lacks. Nothing when the lap holds nothing after it or does not pass through it.
 */
export function lapAfter(lap: Lap | null, seq: number, hash: string): { bytes: Buffer; lines: number } {
  const none = { bytes: Buffer.alloc(0), lines: 0 };
  if (lap === null || lap.lines === 0 || seq >= lap.seq || seq < lap.base.seq) return none;
  if (seq === lap.base.seq) return hash === lap.base.hash ? { bytes: lap.bytes, lines: lap.lines } : none;
  let at = 0;
  for (let n = lap.base.seq + 1; n <= seq; n++) at = lap.bytes.indexOf(10, at) + 1;
  const line = verifiedLine(lap.bytes.subarray(lap.bytes.lastIndexOf(10, at - 2) + 1, at - 1));
  if (line === null || line.seq !== seq || line.hash !== hash) return none;
  return { bytes: lap.bytes.subarray(at), lines: lap.seq - seq };
}
