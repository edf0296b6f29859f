import { createReadStream } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { GENESIS, isRecord } from './line.js';
import { LIVE_FILE, chainFiles } from './segments.js';
import { WAL_FILE, lapAfter, readLap, readWal } from './wal.js';
import { exists } from './fs.js';

export interface AuditFilter {
  /** Exact type, or a prefix ending in '*' (e.g. 'request.*'). */
  type?: string;
  /** Case-insensitive (UPNs are). */
  actor?: string;
  /** Case-insensitive (cmdlet names are). */
  task?: string;
  requestId?: string;
  /** Inclusive lower bound on `time`, anything Date.parse accepts. */
  since?: string;
  /** Exclusive upper bound on `time`. */
  until?: string;
}

function bound(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const ms = Date.parse(value);
  if (Number.isNaN(ms)) throw new RangeError(`audit search: ${name} is not a date: ${value}`);
  return ms;
}

function sameText(actual: unknown, wanted: string | undefined): boolean {
  return wanted === undefined || (typeof actual === 'string' && actual.toLowerCase() === wanted);
}

/**
 * Streams events matching every given filter, in file order. Lines that do not parse are
 * skipped: integrity is verifyAuditFile's job, this is for finding events. The live
 * `audit.jsonl` brings its rotated segments along (oldest first), and after it the lines that are
 * durable in `audit.wal` but not appended to it yet (under load the writer appends them in
 * chunks, up to ~100 ms later). A lap that starts while the files are read can hide lines
 * written in the same instant; a later read finds them.
 */
export async function* readAuditEvents(
  path: string,
  filter: AuditFilter = {},
): AsyncGenerator<Record<string, unknown>> {
  const since = bound(filter.since, 'since', -Infinity);
  const until = bound(filter.until, 'until', Infinity);
  const type = filter.type;
  const typePrefix = type?.endsWith('*') ? type.slice(0, -1) : undefined;
  const actor = filter.actor?.toLowerCase();
  const task = filter.task?.toLowerCase();
  const timed = filter.since !== undefined || filter.until !== undefined;

  const files = await chainFiles(path);
  const last: ChainEnd = { seq: 0, hash: GENESIS };
  for (const file of files) {
    if (file !== path || files.length === 1 || (await exists(file))) yield* readFile(file, match, last);
  }
  if (basename(path) === LIVE_FILE) {
    const wal = await readWal(join(dirname(path), WAL_FILE));
    const pending = wal === null ? null : lapAfter(readLap(wal), last.seq, last.hash);
    if (pending !== null && pending.lines > 0) yield* parseLines(pending.bytes.toString('utf8').split('\n'), match, last);
  }

  function match(ev: Record<string, unknown>): boolean {
    if (type !== undefined) {
      const t = ev['type'];
      if (typeof t !== 'string' || (typePrefix !== undefined ? !t.startsWith(typePrefix) : t !== type)) return false;
    }
    if (!sameText(ev['actor'], actor) || !sameText(ev['task'], task)) return false;
    if (filter.requestId !== undefined && ev['requestId'] !== filter.requestId) return false;
    if (timed) {
      const ms = typeof ev['time'] === 'string' ? Date.parse(ev['time']) : NaN;
      if (!(ms >= since && ms < until)) return false;
    }
    return true;
  }
}

/** The last line read: where the WAL's unappended lines would go on. */
interface ChainEnd {
  seq: number;
  hash: string;
}

async function* readFile(path: string, match: (ev: Record<string, unknown>) => boolean, last: ChainEnd): AsyncGenerator<Record<string, unknown>> {
  const input = createReadStream(path, { encoding: 'utf8' });
  const lines = createInterface({ input, crlfDelay: Infinity });
  try {
    yield* parseLines(lines, match, last);
  } finally {
    lines.close();
    input.destroy();
  }
}

async function* parseLines(lines: AsyncIterable<string> | Iterable<string>, match: (ev: Record<string, unknown>) => boolean, last: ChainEnd): AsyncGenerator<Record<string, unknown>> {
  for await (const line of lines) {
    if (line.length === 0) continue;
    let ev: unknown;
    try {
      ev = JSON.parse(line);
    } catch {
      continue;
    }
    if (!isRecord(ev)) continue;
    if (typeof ev['seq'] === 'number' && typeof ev['hash'] === 'string') {
      last.seq = ev['seq'];
      last.hash = ev['hash'];
    }
    if (match(ev)) yield ev;
  }
}
