import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { GENESIS, computedHash, isRecord, storedHash } from './line.js';
import { exists } from './fs.js';
import { headPathFor, readHead } from './head.js';
import { PRUNED_EVENT, firstLineOf, prunedStartCheck } from './retention.js';
import { computedMac, headMac, storedMac } from './mac.js';
import { LIVE_FILE, chainFiles, isSegment } from './segments.js';
import { WAL_FILE, lapAfter, readLap, readWal } from './wal.js';

export type VerifyResult =
  /**
   * `segments`: rotated files checked before the live one (absent when there were none).
   * `inWal`: acknowledged lines that continue the chain in audit.wal but are not in the file (a
   * crash took them from it; the next start copies them back). Absent when there are none.
   * `prunedThrough`, `prunedHash`: retention deleted lines 1–prunedThrough (an audit.pruned event
   * accounts for them); the last of them had hash prunedHash. Absent when the chain starts at seq 1.
   */
  | { ok: true; events: number; lastHash: string; segments?: number; inWal?: number; prunedThrough?: number; prunedHash?: string; keyed?: number; macsUnchecked?: number }
  /** `line` counts within `file`, which is given only when it is not the path that was asked about. */
  | { ok: false; line: number; reason: string; file?: string };

export interface VerifyOptions {
  /** HMAC key of a keyed chain (mac.ts): every line from the first keyed one on, and audit.head, must carry a valid mac. */
  key?: Buffer | undefined;
}

interface Chain {
  line: number;
  prev: string;
  /** The last audit.pruned event met: the end of the lines retention deleted. */
  pruned?: { seq: number; hash: string };
  key: Buffer | null;
  /** Lines with a mac: checked when there is a key, only counted when there is none. */
  macs: number;
}

const ANCHOR_EVENTS: Readonly<Record<string, (obj: Record<string, unknown>) => string>> = {
  'audit.truncated': (obj) =>
    `file truncated: head records seq ${String(obj['headSeq'])} but file ended at seq ${String(obj['fileSeq'])} (found on reopen)`,
  'audit.unanchored': (obj) =>
    `audit.head was missing at start (${String(obj['head'])}) while the chain held ${String(obj['fileSeq'])} events: lines cut from its end before this one cannot be ruled out`,
};

/** The keyed check of one line whose plain hash is right; a reason or null. */
function checkMac(raw: Buffer, chain: Chain): string | null {
  const mac = storedMac(raw);
  if (mac === null) {
    return chain.key !== null && chain.macs > 0 ? 'no mac on a line after keyed lines (written without the key, or its mac stripped)' : null;
  }
  chain.macs++;
  if (chain.key !== null && computedMac(raw, chain.key) !== mac) return 'mac mismatch (line rewritten without the key, or a different key)';
  return null;
}

/** Checks one complete line (without '\n') against the chain so far; returns a reason or null. */
function checkLine(raw: Buffer, chain: Chain): string | null {
  let obj: unknown;
  try {
    obj = JSON.parse(raw.toString('utf8'));
  } catch {
    return 'not valid JSON';
  }
  if (!isRecord(obj)) return 'not a JSON object';
  const hash = storedHash(raw);
  if (hash === null) return 'missing or malformed hash field (must end with ,"hash":"<64 hex>"})';
  if (computedHash(raw) !== hash) return 'hash mismatch (line edited)';
  const seq = obj['seq'];
  if (seq !== chain.line) return `seq ${JSON.stringify(seq) ?? 'missing'} expected ${chain.line} (line removed or reordered)`;
  if (obj['prev'] !== chain.prev) return 'prev does not match previous hash';
  if (obj['type'] === PRUNED_EVENT && typeof obj['throughSeq'] === 'number' && typeof obj['throughHash'] === 'string') {
    chain.pruned = { seq: obj['throughSeq'], hash: obj['throughHash'] };
  }
  const mac = checkMac(raw, chain);
  if (mac !== null) return mac;
  const anchorEvent = typeof obj['type'] === 'string' && Object.hasOwn(ANCHOR_EVENTS, obj['type']) ? ANCHOR_EVENTS[obj['type']] : undefined;
  if (anchorEvent !== undefined) return anchorEvent(obj);
  chain.prev = hash;
  return null;
}

/**
 * Verifies the hash chain on the raw bytes (never re-serialising) and, when `audit.head` sits
 * next to the file, that the file still reaches the anchored line. Stops at the first bad line.
 * Given the live `audit.jsonl` (or its data dir), the rotated segments before it are checked
 * too, as one chain; a failure then names the file it is in when that is not `path`.
 */
export async function verifyAuditFile(path: string, opts: VerifyOptions = {}): Promise<VerifyResult> {
  const live = (await isDirectory(path)) ? join(path, LIVE_FILE) : path;
  // A writer may rotate while we read (the live file we open is then newer than the segment
  // list): a failure with a changed segment list is re-checked, not reported.
  for (let attempt = 0; ; attempt++) {
    const files = await chainFiles(live);
    const result = await verifyFiles(path, live, files, opts.key ?? null);
    if (result.ok || attempt >= 2 || (await chainFiles(live)).length === files.length) return result;
  }
}

async function verifyFiles(path: string, live: string, files: string[], key: Buffer | null): Promise<VerifyResult> {
  // Read the head before the files: it never leads the file, so a concurrent writer cannot cause a false alarm.
  // A rotated segment checked on its own ends before the anchored line, so the head does not apply to it.
  const head = isSegment(live) ? 'absent' : await readHead(headPathFor(live));
  // After retention deleted the oldest segments the chain goes on from the first retained line;
  // prunedStartCheck below makes sure an audit.pruned event accounts for the lines before it.
  const start = files.length > 0 ? await firstLineOf(files[0]!) : null;
  const chain: Chain = start !== null && start.seq > 1 ? { line: start.seq - 1, prev: start.prev, key, macs: 0 } : { line: 0, prev: GENESIS, key, macs: 0 };
  let hashAtHead: string | null = null;
  let headAt = { file: live, line: 0 };
  let fileLine = 0;
  let failedIn = live;

  const fail = (line: number, reason: string): VerifyResult =>
    failedIn === path ? { ok: false, line, reason } : { ok: false, line, reason, file: failedIn };

  for (const file of files) {
    failedIn = file;
    fileLine = 0;
    const carry: Buffer[] = [];
    // A crash between a rotation's rename and the new live file leaves no live file: an empty end.
    const stream = createReadStream(file, { highWaterMark: 64 * 1024 });
    try {
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        let pos = 0;
        for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, pos)) {
          let raw = chunk.subarray(pos, nl);
          if (carry.length > 0) {
            carry.push(raw);
            raw = Buffer.concat(carry);
            carry.length = 0;
          }
          pos = nl + 1;
          chain.line++;
          fileLine++;
          const reason = checkLine(raw, chain);
          if (reason !== null) return fail(fileLine, reason);
          if (typeof head === 'object' && chain.line === head.seq) {
            hashAtHead = chain.prev;
            headAt = { file, line: fileLine };
          }
        }
        if (pos < chunk.length) carry.push(chunk.subarray(pos));
      }
    } catch (err) {
      if (!(file === live && files.length > 1 && (err as NodeJS.ErrnoException).code === 'ENOENT')) throw err;
    } finally {
      stream.destroy();
    }
    if (carry.length > 0) return fail(fileLine + 1, 'missing trailing newline (torn last line)');
  }

  const events = chain.line;
  const prunedThrough = start !== null && start.seq > 1 ? start.seq - 1 : 0;
  if (prunedThrough > 0) {
    const unaccounted = prunedStartCheck(start!, chain.pruned ?? null);
    failedIn = files[0]!;
    if (unaccounted !== null) return fail(1, unaccounted);
  }
  failedIn = live;
  const lastLine = fileLine;
  if (head === 'unreadable') {
    return fail(lastLine + 1, 'audit.head is unreadable, cannot rule out truncation');
  }
  // Next to the live file an anchor is always kept (open() writes one before the first line): its
  // absence is what cutting lines and deleting it would leave. A copy under another name has none.
  // A directory of exported segments has no live file: its end is vouched for by the retained chain's first prev.
  if (head === 'absent' && events > 0 && basename(live) === LIVE_FILE && (await exists(live))) {
    return fail(lastLine + 1, `anchor missing: audit.head is absent but the chain holds ${events} events, so lines cut from its end cannot be ruled out`);
  }
  if (key !== null && events > 0) {
    if (chain.macs === 0) return fail(lastLine + 1, 'no line carries a mac: the chain was not written with a key, or its macs were stripped');
    if (typeof head === 'object' && (head.mac === undefined || head.mac !== headMac(key, head.seq, head.hash))) {
      return fail(lastLine + 1, `audit.head ${head.mac === undefined ? 'has no mac' : 'mac mismatch'}: the anchor was rewritten without the key`);
    }
  }
  if (typeof head === 'object' && head.seq > 0) {
    if (head.seq > events) {
      return fail(lastLine + 1, `file truncated: head records seq ${head.seq} but file ends at seq ${events}`);
    }
    // A head older than the first retained line (retention pruned it) can only vouch that the file reaches past it.
    if (hashAtHead !== head.hash && head.seq > prunedThrough) {
      failedIn = headAt.file;
      return fail(
        headAt.line,
        `file truncated and rewritten: head records seq ${head.seq} with hash ${head.hash.slice(0, 12)}… but that line has hash ${String(hashAtHead).slice(0, 12)}…`,
      );
    }
  }
  const segments = files.length - 1;
  const wal = basename(live) === LIVE_FILE ? await readWal(join(dirname(live), WAL_FILE)) : null;
  const inWal = wal === null ? 0 : lapAfter(readLap(wal), events, chain.prev).lines;
  const macs = chain.macs > 0 ? (key !== null ? { keyed: chain.macs } : { macsUnchecked: chain.macs }) : {};
  return { ok: true, events, lastHash: chain.prev, ...(segments > 0 ? { segments } : {}), ...(inWal > 0 ? { inWal } : {}), ...(prunedThrough > 0 ? { prunedThrough, prunedHash: start!.prev } : {}), ...macs };
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}
