import { constants as fsConstants } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { AuditFs } from './fs.js';
import { computedHash, isRecord, storedHash } from './line.js';

/**
 * audit.wal is where a batch becomes durable. It is a fixed-size, zero-filled file that batches
 * overwrite in place, one positional write each (O_DSYNC, or write + fdatasync). Rewriting blocks
 * that are already allocated and written makes the sync a data write and a cache flush, with no
 * file-size change for the filesystem to journal: on ext4 it took half the time and about a third
 * of the CPU of a durable append of the same bytes (bench/RESULTS.md). The very same bytes go to
 * audit.jsonl as a plain append, which a checkpoint makes durable (see log.ts); the WAL only has to
 * hold what came after the last checkpoint.
 *
 * A *lap* starts at offset 0, only once audit.jsonl is durable up to the line before it, and then
 * runs on contiguously. Its first line is a header naming that base: where audit.jsonl ended (byte
 * offset) and the seq and hash of its last line. After a crash, audit.jsonl from the base on must
 * be the lap's lines (each verified and chained on the one before): open() checks the base is
 * still there and rewrites whatever after it differs (log.ts, recover.ts).
 */
export const WAL_FILE = 'audit.wal';
export const DEFAULT_WAL_BYTES = 16 * 1024 * 1024;

export type WalSyncMode = 'o_dsync' | 'fdatasync';

const ZERO_CHUNK = 1024 * 1024;
const NUL: Buffer = Buffer.alloc(1);
/** Upper bound of a header line's length: `{"lap":1,"liveOffset":<≤16 digits>,"seq":<≤16>,"hash":"<64>"}\n`. */
export const LAP_HEADER_MAX = 160;

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
  #offset = 0;
  /** The header of a lap that has begun but holds no batch yet; written with its first batch. */
  #header: Buffer | null = null;

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

  /** Whether `bytes` more fit in this lap. */
  fits(bytes: number): boolean {
    return this.#offset + (this.#header?.length ?? 0) + bytes <= this.#size;
  }

  /**
   * The next write goes to offset 0, headed by `base`. Only once audit.jsonl is durable up to
   * `base`, the last acknowledged line. The old lap stays readable until that write (or a cut).
   */
  startLap(base: LapBase): void {
    this.#offset = 0;
    this.#header = Buffer.from(JSON.stringify({ lap: 1, liveOffset: base.liveOffset, seq: base.seq, hash: base.hash }) + '\n', 'latin1');
  }

  /** Writes `buf` at the lap's next offset (after the lap's header, for its first batch) and returns once it is on stable storage. */
  async write(buf: Buffer): Promise<void> {
    const data = this.#header === null ? buf : Buffer.concat([this.#header, buf]);
    let off = 0;
    while (off < data.length) {
      const written = await this.#fs.write(this.#fd, data, off, data.length - off, this.#offset + off);
      if (written <= 0) throw new Error('audit WAL write made no progress');
      off += written;
    }
    if (this.#syncMode === 'fdatasync') await this.#fs.fdatasync(this.#fd);
    this.#offset += data.length;
    this.#header = null;
  }

  /**
   * Makes the lap end at the current offset, durably: a NUL where the next line would start. After a
   * failed write, the lines of the refused batch that did reach the disk can then never be replayed.
   * Right after startLap() it empties the lap (offset 0: no header, nothing to replay).
   */
  async cut(): Promise<void> {
    const written = await this.#fs.write(this.#fd, NUL, 0, 1, this.#offset);
    if (written !== 1) throw new Error('audit WAL cut made no progress');
    if (this.#syncMode === 'fdatasync') await this.#fs.fdatasync(this.#fd);
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
  start: number;
}

/** A lap as read back: its base, its lines' bytes (from the first line to the last line's end), and where its chain ends. */
export interface Lap {
  base: LapBase;
  /** Offset in the WAL of the first line after the header. */
  start: number;
  bytes: Buffer;
  lines: number;
  seq: number;
  hash: string;
}

/** The lap at offset 0: a valid header, then lines that each verify and chain on, from the base. Null without a header. */
export function readLap(wal: Buffer): Lap | null {
  const headerEnd = wal[0] === 0x7b ? wal.indexOf(10) : -1;
  if (headerEnd === -1 || headerEnd > LAP_HEADER_MAX) return null;
  const base = parseHeader(wal.subarray(0, headerEnd));
  if (base === null) return null;
  let { seq, hash } = base;
  let lines = 0;
  let at = headerEnd + 1;
  while (at < wal.length && wal[at] === 0x7b) {
    const nl = wal.indexOf(10, at);
    if (nl === -1) break;
    const line = verifiedLine(wal.subarray(at, nl), at);
    if (line === null || line.seq !== seq + 1 || line.prev !== hash) break;
    ({ seq, hash } = line);
    lines++;
    at = nl + 1;
  }
  return { base, start: headerEnd + 1, bytes: wal.subarray(headerEnd + 1, at), lines, seq, hash };
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

function verifiedLine(raw: Buffer, start: number): LapLine | null {
  const hash = storedHash(raw);
  if (hash === null || computedHash(raw) !== hash) return null;
  let obj: unknown;
  try {
    obj = JSON.parse(raw.toString('utf8'));
  } catch {
    return null;
  }
  if (!isRecord(obj)) return null;
  const { seq, prev } = obj;
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 1 || typeof prev !== 'string') return null;
  return { seq, hash, prev, start };
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
  const line = verifiedLine(lap.bytes.subarray(lap.bytes.lastIndexOf(10, at - 2) + 1, at - 1), 0);
  if (line === null || line.seq !== seq || line.hash !== hash) return none;
  return { bytes: lap.bytes.subarray(at), lines: lap.seq - seq };
}
