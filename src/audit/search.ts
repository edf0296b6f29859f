import { createReadStream } from 'node:fs';
import { access } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { isRecord } from './line.js';
import { chainFiles } from './segments.js';

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
 * `audit.jsonl` brings its rotated segments along (oldest first).
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
  for (const file of files) {
    if (file !== path || files.length === 1 || (await exists(file))) yield* readFile(file, match);
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

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

async function* readFile(path: string, match: (ev: Record<string, unknown>) => boolean): AsyncGenerator<Record<string, unknown>> {
  const input = createReadStream(path, { encoding: 'utf8' });
  const lines = createInterface({ input, crlfDelay: Infinity });
  try {
    for await (const line of lines) {
      if (line.length === 0) continue;
      let ev: unknown;
      try {
        ev = JSON.parse(line);
      } catch {
        continue;
      }
      if (isRecord(ev) && match(ev)) yield ev;
    }
  } finally {
    lines.close();
    input.destroy();
  }
}
