import { createReadStream } from 'node:fs';
import { GENESIS, computedHash, isRecord, storedHash } from './line.js';
import { headPathFor, readHead } from './head.js';

export type VerifyResult =
  | { ok: true; events: number; lastHash: string }
  | { ok: false; line: number; reason: string };

interface Chain {
  line: number;
  prev: string;
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
  if (obj['type'] === 'audit.truncated') {
    return `file truncated: head records seq ${String(obj['headSeq'])} but file ended at seq ${String(obj['fileSeq'])} (found on reopen)`;
  }
  chain.prev = hash;
  return null;
}

/**
 * Verifies the hash chain on the raw bytes (never re-serialising) and, when `audit.head` sits
 * next to the file, that the file still reaches the anchored line. Stops at the first bad line.
 */
export async function verifyAuditFile(path: string): Promise<VerifyResult> {
  // Read the head before the file: it never leads the file, so a concurrent writer cannot cause a false alarm.
  const head = await readHead(headPathFor(path));
  const chain: Chain = { line: 0, prev: GENESIS };
  let hashAtHead: string | null = null;
  const carry: Buffer[] = [];

  const stream = createReadStream(path, { highWaterMark: 64 * 1024 });
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
        const reason = checkLine(raw, chain);
        if (reason !== null) return { ok: false, line: chain.line, reason };
        if (typeof head === 'object' && chain.line === head.seq) hashAtHead = chain.prev;
      }
      if (pos < chunk.length) carry.push(chunk.subarray(pos));
    }
  } finally {
    stream.destroy();
  }

  const events = chain.line;
  if (carry.length > 0) return { ok: false, line: events + 1, reason: 'missing trailing newline (torn last line)' };
  if (head === 'unreadable') {
    return { ok: false, line: events + 1, reason: 'audit.head is unreadable, cannot rule out truncation' };
  }
  if (typeof head === 'object' && head.seq > 0) {
    if (head.seq > events) {
      return { ok: false, line: events + 1, reason: `file truncated: head records seq ${head.seq} but file ends at seq ${events}` };
    }
    if (hashAtHead !== head.hash) {
      return {
        ok: false,
        line: head.seq,
        reason: `file truncated and rewritten: head records seq ${head.seq} with hash ${head.hash.slice(0, 12)}… but that line has hash ${String(hashAtHead).slice(0, 12)}…`,
      };
    }
  }
  return { ok: true, events, lastHash: chain.prev };
}
