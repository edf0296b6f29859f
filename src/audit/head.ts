import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';

/**
 * audit.head anchors the chain's end so removing whole lines from the end is detectable.
 * Fixed size so it can be overwritten in place with one pwrite at offset 0.
 */
export const HEAD_FILE = 'audit.head';
export const HEAD_SIZE = 128;

export interface HeadRecord {
  seq: number;
  hash: string;
}

export function headPathFor(auditPath: string): string {
  return join(dirname(auditPath), HEAD_FILE);
}

/** Fills `buf` (HEAD_SIZE bytes) with the padded record; reusing one buffer keeps this allocation-free. */
export function encodeHead(seq: number, hash: string, buf: Buffer): void {
  const written = buf.write('{"seq":' + seq + ',"hash":"' + hash + '"}', 0, 'latin1');
  buf.fill(0x20, written);
}

export function parseHead(text: string): HeadRecord | null {
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof obj !== 'object' || obj === null) return null;
  const { seq, hash } = obj as { seq?: unknown; hash?: unknown };
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0) return null;
  if (typeof hash !== 'string' || !/^[0-9a-f]{64}$/.test(hash)) return null;
  return { seq, hash };
}

/** 'absent' when there is no head file (or an empty one), 'unreadable' when it holds something that does not parse. */
export async function readHead(path: string): Promise<HeadRecord | 'absent' | 'unreadable'> {
  let text: string;
  try {
    text = await readFile(path, 'latin1');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
    throw err;
  }
  // Created but never written (open() creates it; a crash can come before the first write): no anchor yet.
  if (text.length === 0) return 'absent';
  return parseHead(text) ?? 'unreadable';
}
