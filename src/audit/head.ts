import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';

/**
 * audit.head anchors the chain's end so removing whole lines from the end is detectable.
 * Fixed size so it can be overwritten in place with one pwrite at offset 0.
 */
export const HEAD_FILE = 'audit.head';
export const HEAD_SIZE = 128;
/** Size of a head that carries a mac (keyed chain, mac.ts). */
export const KEYED_HEAD_SIZE = 256;

export interface HeadRecord {
  seq: number;
  hash: string;
  mac?: string;
}

export function headPathFor(auditPath: string): string {
  return join(dirname(auditPath), HEAD_FILE);
}

/** Fills `buf` (HEAD_SIZE, or KEYED_HEAD_SIZE with a mac) with the padded record; reusing one buffer keeps this allocation-free. */
export function encodeHead(seq: number, hash: string, buf: Buffer, mac?: string): void {
  const written = buf.write('{"seq":' + seq + ',"hash":"' + hash + (mac === undefined ? '"}' : '","mac":"' + mac + '"}'), 0, 'latin1');
  buf.fill(0x20, written);
}

/**
 * Reads the record up to its first '}': a shorter record written over a longer one (a head without
 * a mac over one with a mac) leaves the longer one's tail behind it.
 */
export function parseHead(text: string): HeadRecord | null {
  const end = text.indexOf('}');
  if (end === -1) return null;
  let obj: unknown;
  try {
    obj = JSON.parse(text.slice(0, end + 1));
  } catch {
    return null;
  }
  if (typeof obj !== 'object' || obj === null) return null;
  const { seq, hash, mac } = obj as { seq?: unknown; hash?: unknown; mac?: unknown };
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0) return null;
  if (typeof hash !== 'string' || !/^[0-9a-f]{64}$/.test(hash)) return null;
  if (mac !== undefined && (typeof mac !== 'string' || !/^[0-9a-f]{64}$/.test(mac))) return null;
  return mac === undefined ? { seq, hash } : { seq, hash, mac };
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
