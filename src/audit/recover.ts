import { open, type FileHandle } from 'node:fs/promises';
import { GENESIS, parseStoredLine } from './line.js';

export interface TailState {
  /** seq and hash of the last well-formed line (0 and GENESIS when there is none). */
  seq: number;
  hash: string;
  /** Byte length the file must have: everything after it is a torn write. */
  durableSize: number;
  /** Number of torn bytes to cut (0 when the file ends cleanly). */
  tornBytes: number;
  /** Start of the torn bytes as text, at most TORN_TEXT_MAX chars. */
  tornText: string;
}

export const TORN_TEXT_MAX = 1000;
const CHUNK = 64 * 1024;
// A line longer than this cannot be ours; treat it as unparseable instead of reading it into memory.
const MAX_LINE = 16 * 1024 * 1024;

/** Index of the last '\n' in [0, before), or -1. Scans backwards a chunk at a time. */
async function lastNewline(fh: FileHandle, before: number, scratch: Buffer): Promise<number> {
  let end = before;
  while (end > 0) {
    const start = Math.max(0, end - scratch.length);
    const { bytesRead } = await fh.read(scratch, 0, end - start, start);
    const at = scratch.subarray(0, bytesRead).lastIndexOf(10);
    if (at !== -1) return start + at;
    end = start;
  }
  return -1;
}

async function readRange(fh: FileHandle, start: number, end: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(end - start);
  let off = 0;
  while (off < buf.length) {
    const { bytesRead } = await fh.read(buf, off, buf.length - off, start + off);
    if (bytesRead === 0) break;
    off += bytesRead;
  }
  return buf.subarray(0, off);
}

/**
 * Reads the file's tail to find where the chain continues. A final segment without '\n', or
 * an unparseable final line, is a torn write and is reported for cutting. Corruption further
 * up is left alone (verify reports it); the chain continues from the last well-formed line.
 */
export async function readTail(path: string): Promise<TailState> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    const scratch = Buffer.allocUnsafe(CHUNK);
    const lastNl = await lastNewline(fh, size, scratch);
    let tornStart = lastNl + 1;
    let seq = 0;
    let hash = GENESIS;
    let lineEnd = lastNl;
    let isLastLine = true;
    while (lineEnd >= 0) {
      const start = (await lastNewline(fh, lineEnd, scratch)) + 1;
      const parsed = lineEnd - start <= MAX_LINE ? parseStoredLine(await readRange(fh, start, lineEnd)) : null;
      if (parsed) {
        seq = parsed.seq;
        hash = parsed.hash;
        break;
      }
      if (isLastLine && tornStart === size) tornStart = start;
      isLastLine = false;
      lineEnd = start - 1;
    }
    const tornBytes = size - tornStart;
    const tornText =
      tornBytes > 0
        ? (await readRange(fh, tornStart, tornStart + Math.min(tornBytes, TORN_TEXT_MAX * 4))).toString('utf8').slice(0, TORN_TEXT_MAX)
        : '';
    return { seq, hash, durableSize: tornStart, tornBytes, tornText };
  } finally {
    await fh.close();
  }
}
