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
 * runs on contiguously. After a crash, the lines audit.jsonl lacks are the lap's lines, read from
 * offset 0 while each one verifies and chains on, that come after audit.jsonl's last line.
 */
export const WAL_FILE = 'audit.wal';
export const DEFAULT_WAL_BYTES = 16 * 1024 * 1024;

export type WalSyncMode = 'o_dsync' | 'fdatasync';

const ZERO_CHUNK = 1024 * 1024;
const NUL: Buffer = Buffer.alloc(1);

export class Wal {
  readonly #fs: AuditFs;
  readonly #fd: number;
  readonly #size: number;
  readonly #syncMode: WalSyncMode;
  #offset = 0;

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
    return this.#offset + bytes <= this.#size;
  }

  /** The next write goes to offset 0. Only once audit.jsonl is durable up to the last acknowledged line. */
  restartLap(): void {
    this.#offset = 0;
  }

  /** Writes `buf` at the lap's next offset and returns once it is on stable storage. */
  async write(buf: Buffer): Promise<void> {
    let off = 0;
    while (off < buf.length) {
      const written = await this.#fs.write(this.#fd, buf, off, buf.length - off, this.#offset + off);
      if (written <= 0) throw new Error('audit WAL write made no progress');
      off += written;
    }
    if (this.#syncMode === 'fdatasync') await this.#fs.fdatasync(this.#fd);
    this.#offset += buf.length;
  }

  /**
   * Makes the lap end at the current offset, durably: a NUL where the next line would start. After a
   * failed write, the lines of the refused batch that did reach the disk can then never be replayed.
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

/** The lap's lines from offset 0: each one well formed, its hash right, chained on the one before. */
function lapLines(wal: Buffer): { lines: LapLine[]; end: number } {
  const lines: LapLine[] = [];
  let start = 0;
  while (start < wal.length && wal[start] === 0x7b) {
    const nl = wal.indexOf(10, start);
    if (nl === -1) break;
    const raw = wal.subarray(start, nl);
    const line = verifiedLine(raw, start);
    if (line === null) break;
    const last = lines.at(-1);
    if (last !== undefined && (line.seq !== last.seq + 1 || line.prev !== last.hash)) break;
    lines.push(line);
    start = nl + 1;
  }
  return { lines, end: start };
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
 * The bytes of the lap that continue a chain ending at (seq, hash): what audit.jsonl lacks, and the
 * seq and hash the chain then ends at. Nothing when the lap holds nothing after it, or when the lap
 * does not continue that chain (a lap of an older chain, or a file changed while we were down:
 * verify reports that; replay must not guess).
 */
export function walContinuation(wal: Buffer, seq: number, hash: string): { bytes: Buffer; lines: number; seq: number; hash: string } {
  const none = { bytes: Buffer.alloc(0), lines: 0, seq, hash };
  const { lines, end } = lapLines(wal);
  const at = lines.findIndex((l) => l.seq > seq);
  if (at === -1) return none;
  const first = lines[at]!;
  if (first.seq !== seq + 1 || first.prev !== hash) return none;
  const last = lines.at(-1)!;
  return { bytes: wal.subarray(first.start, end), lines: lines.length - at, seq: last.seq, hash: last.hash };
}
