import { open, stat, unlink } from 'node:fs/promises';
import { basename } from 'node:path';
import { nodeAuditFs } from './fs.js';
import { parseStoredLine } from './line.js';
import { readTail } from './recover.js';
import { listSegments } from './segments.js';
import { exists } from './fs.js';

/**
 * Retention of rotated audit segments. Without a setting nothing is ever deleted. With
 * `days`, a rotated segment is deleted once its last write (its rotation) is that many days old;
 * with `requireExport` also, only once `<segment>.exported` exists next to it (written by
 * `pamgate audit export`, or by the operator's own shipper after a verified upload). Only the oldest
 * segments go, in order, and never the newest one: the live file's chain starts from its last line.
 *
 * Before a segment is deleted, an `audit.pruned` event naming the last pruned line (`throughSeq`,
 * `throughHash`) is made durable in the chain, so `pamgate audit verify` can tell retention from
 * removal (see prunedStartCheck).
 */
export interface RetentionPolicy {
  /** Keep a rotated segment at least this many days after its rotation (0: no wait). */
  days: number;
  /** Delete a segment only once it has been exported. */
  requireExport: boolean;
}

export const EXPORTED_SUFFIX = '.exported';
export const PRUNED_EVENT = 'audit.pruned';
const DAY_MS = 86_400_000;

/** `PAMGATE_AUDIT_RETENTION_DAYS` and `PAMGATE_AUDIT_RETENTION_REQUIRE_EXPORT`; null: keep forever. */
export function retentionFromEnv(env: NodeJS.ProcessEnv): RetentionPolicy | null {
  const daysText = env['PAMGATE_AUDIT_RETENTION_DAYS'];
  const exportText = env['PAMGATE_AUDIT_RETENTION_REQUIRE_EXPORT'];
  let requireExport = false;
  if (exportText !== undefined && exportText !== '') {
    if (!/^(1|0|true|false|yes|no|on|off)$/i.test(exportText)) throw new RangeError(`PAMGATE_AUDIT_RETENTION_REQUIRE_EXPORT must be true or false, got "${exportText}"`);
    requireExport = /^(1|true|yes|on)$/i.test(exportText);
  }
  if (daysText === undefined || daysText === '') {
    // "Until exported" on its own: delete as soon as a segment is exported.
    return requireExport ? { days: 0, requireExport } : null;
  }
  const days = Number(daysText);
  if (!/^\d+(\.\d+)?$/.test(daysText.trim()) || !Number.isFinite(days)) throw new RangeError(`PAMGATE_AUDIT_RETENTION_DAYS must be a number of days (e.g. 90), got "${daysText}"`);
  return { days, requireExport };
}

export function exportMarkerPath(segment: string): string {
  return segment + EXPORTED_SUFFIX;
}

/** The oldest segments that may go now, oldest first: a run that stops at the first one that must stay, never the newest. */
export async function prunableSegments(dir: string, policy: RetentionPolicy, nowMs: number): Promise<Array<{ index: number; path: string }>> {
  const segments = (await listSegments(dir)).slice(0, -1);
  const out: Array<{ index: number; path: string }> = [];
  for (const s of segments) {
    if (policy.days > 0 && nowMs - (await stat(s.path)).mtimeMs < policy.days * DAY_MS) break;
    if (policy.requireExport && !(await exists(exportMarkerPath(s.path)))) break;
    out.push(s);
  }
  return out;
}

export interface PruneResult {
  segments: string[];
  throughSeq: number;
}

/**
 * Deletes the segments retention lets go, after recording them in the chain (`append` must make the
 * event durable; if it fails nothing is deleted). A crash after the record and before the last
 * deletion leaves segments that the next run deletes.
 */
export async function pruneSegments(
  dir: string,
  policy: RetentionPolicy,
  nowMs: number,
  append: (event: { type: string; actor: null; [k: string]: unknown }) => Promise<void>,
): Promise<PruneResult | null> {
  const prunable = await prunableSegments(dir, policy, nowMs);
  if (prunable.length === 0) return null;
  const last = await readTail(prunable.at(-1)!.path);
  const names = prunable.map((s) => basename(s.path));
  await append({
    type: PRUNED_EVENT,
    actor: null,
    first: names[0],
    last: names.at(-1),
    segments: names.length,
    throughSeq: last.seq,
    throughHash: last.hash,
    retentionDays: policy.days,
    requireExport: policy.requireExport,
  });
  for (const s of prunable) {
    await unlink(s.path);
    await unlink(exportMarkerPath(s.path)).catch(() => undefined);
  }
  await nodeAuditFs.syncDir!(dir);
  return { segments: names, throughSeq: last.seq };
}

/**
 * For verification: a chain whose first line is not seq 1 is whole only if a retained
 * `audit.pruned` event covers the lines before it. `start` is the first line's seq and prev;
 * `pruned` the last `audit.pruned` event's `throughSeq`/`throughHash` met in the chain. Null when
 * the start is accounted for, else the reason it is not.
 */
export function prunedStartCheck(start: { seq: number; prev: string }, pruned: { seq: number; hash: string } | null): string | null {
  const before = start.seq - 1;
  if (before === 0) return null;
  if (pruned === null || pruned.seq < before) {
    return `chain starts at seq ${start.seq}: lines 1–${before} are missing and no audit.pruned event in the chain records them as pruned (segments removed)`;
  }
  // A crash between the record and its last deletion leaves segments that were to go: still a whole chain.
  if (pruned.seq === before && pruned.hash !== start.prev) {
    return `chain starts at seq ${start.seq} with prev ${start.prev.slice(0, 12)}…, but audit.pruned records seq ${before} with hash ${pruned.hash.slice(0, 12)}…`;
  }
  return null;
}

/** seq and prev of a file's first line, or null when it has none that parses (verification then reports it). */
export async function firstLineOf(path: string): Promise<{ seq: number; prev: string } | null> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  try {
    const chunks: Buffer[] = [];
    let read = 0;
    for (;;) {
      const buf = Buffer.allocUnsafe(FIRST_LINE_CHUNK);
      const { bytesRead } = await fh.read(buf, 0, buf.length, read);
      if (bytesRead === 0) return null;
      const chunk = buf.subarray(0, bytesRead);
      const nl = chunk.indexOf(10);
      chunks.push(nl === -1 ? chunk : chunk.subarray(0, nl));
      read += bytesRead;
      if (nl !== -1) break;
      if (read >= FIRST_LINE_MAX) return null;
    }
    const line = parseStoredLine(Buffer.concat(chunks));
    return line !== null && typeof line.prev === 'string' ? { seq: line.seq, prev: line.prev } : null;
  } finally {
    await fh.close();
  }
}

const FIRST_LINE_CHUNK = 64 * 1024;
const FIRST_LINE_MAX = 16 * 1024 * 1024;
