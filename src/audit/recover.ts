import { open, type FileHandle } from 'node:fs/promises';
import { GENESIS, parseStoredLine } from './line.js';
import type { Lap } from './wal.js';

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

export interface ReplayPlan {
  /** Cut the live file to this size (the lap's base), then append `append` (the whole lap). */
  cutAt: number;
  append: Buffer;
  /** Lap lines the live file did not show whole and as written. */
  restored: number;
  /** What the cut removes that is not the start of a lap line (no recorded line): for audit.repaired. */
  dropped: { bytes: number; text: string; end: string } | null;
  /** Where the chain and the file end afterwards. */
  seq: number;
  hash: string;
  size: number;
}

/**
 * From a lap's base on, the live file must read as the lap (wal.ts). Checks the base is still in
 * the file — `before` is the chain position ahead of the file's first byte (the last segment's
 * end, or seq 0) — and plans to cut the file there and write the whole lap again: what the page
 * cache shows may not be what the disk holds, so a match proves nothing; it is only compared to
 * count the lines the file lacked and to find what lies beyond the lap. Null when the base is not
 * in the file (lines removed or the file replaced while down: not for replay to guess; the head
 * check and verify report it).
 */
export async function planReplay(path: string, lap: Lap, before: { seq: number; hash: string }): Promise<ReplayPlan | null> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    const { liveOffset, seq, hash } = lap.base;
    if (liveOffset > size) return null;
    if (liveOffset === 0) {
      if (before.seq !== seq || before.hash !== hash) return null;
    } else {
      const scratch = Buffer.allocUnsafe(CHUNK);
      const last = await readRange(fh, liveOffset - 1, liveOffset);
      if (last[0] !== 10) return null;
      const start = (await lastNewline(fh, liveOffset - 1, scratch)) + 1;
      const parsed = liveOffset - 1 - start <= MAX_LINE ? parseStoredLine(await readRange(fh, start, liveOffset - 1)) : null;
      if (parsed === null || parsed.seq !== seq || parsed.hash !== hash) return null;
    }
    const after = size - liveOffset;
    const live = await readRange(fh, liveOffset, liveOffset + Math.min(after, lap.bytes.length));
    let same = 0;
    while (same < live.length && live[same] === lap.bytes[same]) same++;
    // Whole lines only (a Buffer's lastIndexOf counts a negative offset from the end: guard 0).
    const keep = same === lap.bytes.length ? same : same === 0 ? 0 : lap.bytes.lastIndexOf(10, same - 1) + 1;
    // What the cut removes within the lap's length is a damaged copy of lap lines, rewritten; only
    // bytes past the whole lap are not recorded anywhere (a batch whose durable write never
    // finished, a refused batch, torn bytes).
    let dropped: ReplayPlan['dropped'] = null;
    const beyond = liveOffset + lap.bytes.length;
    if (size > beyond) {
      const text = (await readRange(fh, beyond, Math.min(size, beyond + TORN_TEXT_MAX * 4))).toString('utf8').slice(0, TORN_TEXT_MAX);
      const end = size - beyond > TORN_TEXT_MAX ? (await readRange(fh, Math.max(beyond, size - 800), size)).toString('utf8').slice(-200) : text;
      dropped = { bytes: size - beyond, text, end };
    }
    let restored = 0;
    const missing = lap.bytes.subarray(keep);
    for (let i = missing.indexOf(10); i !== -1; i = missing.indexOf(10, i + 1)) restored++;
    return { cutAt: liveOffset, append: lap.bytes, restored, dropped, seq: lap.seq, hash: lap.hash, size: liveOffset + lap.bytes.length };
  } finally {
    await fh.close();
  }
}
