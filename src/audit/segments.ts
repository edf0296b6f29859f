import { readdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * The audit chain lives in rotated segments `audit-000001.jsonl`, `audit-000002.jsonl`, … followed by
 * the live file `audit.jsonl`. The hash chain and `seq` run on across them as if they were one file.
 */
export const LIVE_FILE = 'audit.jsonl';
const SEGMENT = /^audit-(\d{6,})\.jsonl$/;

export function segmentName(index: number): string {
  return `audit-${String(index).padStart(6, '0')}.jsonl`;
}

export function isSegment(path: string): boolean {
  return SEGMENT.test(basename(path));
}

/** Rotated segments in `dir`, oldest first, as index and full path. */
export async function listSegments(dir: string): Promise<Array<{ index: number; path: string }>> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const out: Array<{ index: number; path: string }> = [];
  for (const name of names) {
    const m = SEGMENT.exec(name);
    if (m) out.push({ index: Number(m[1]), path: join(dir, name) });
  }
  return out.sort((a, b) => a.index - b.index);
}

/**
 * The files that make up the chain `path` belongs to, in order. The live file brings its rotated
 * segments along; any other file (a copy, one segment) stands alone.
 */
export async function chainFiles(path: string): Promise<string[]> {
  if (basename(path) !== LIVE_FILE) return [path];
  const segments = await listSegments(dirname(path));
  return [...segments.map((s) => s.path), path];
}
