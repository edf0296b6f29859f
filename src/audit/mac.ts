import { createHmac } from 'node:crypto';
import { HASH_SUFFIX_LEN } from './line.js';

/**
 * Keyed audit chain. With a key, every line carries `"mac":"<HMAC-SHA256 hex>"` right before its
 * hash: the HMAC covers the line as the plain hash would (up to and including `prev`, closed with
 * '}'), and the plain hash then covers the mac too. Since each line's mac covers `prev`, a line's
 * mac vouches for every line before it; audit.head carries a mac over (seq, hash) as well, so a
 * cut end cannot be re-anchored without the key. The plain chain is unchanged: it verifies
 * without the key.
 */
const MAC_KEY = ',"mac":"';
/** Length of `,"mac":"<64 hex>"`. */
export const MAC_FIELD_LEN = MAC_KEY.length + 64 + 1;

function hmacHex(key: Buffer, ...parts: Array<string | Buffer>): string {
  const h = createHmac('sha256', key);
  for (const p of parts) h.update(p);
  return h.digest('hex');
}

/** The line start (up to `prev`, no closing brace) with its mac appended. */
export function withMac(start: string, key: Buffer): string {
  return start + MAC_KEY + hmacHex(key, start, '}') + '"';
}

function isLowerHex(byte: number): boolean {
  return (byte >= 0x30 && byte <= 0x39) || (byte >= 0x61 && byte <= 0x66);
}

/** The mac stored in a raw line (no '\n') whose hash suffix is well-formed, or null when it has none. */
export function storedMac(line: Buffer): string | null {
  const at = line.length - HASH_SUFFIX_LEN - MAC_FIELD_LEN;
  if (at < 1 || line.toString('latin1', at, at + MAC_KEY.length) !== MAC_KEY) return null;
  const hexAt = at + MAC_KEY.length;
  for (let i = hexAt; i < hexAt + 64; i++) if (!isLowerHex(line[i]!)) return null;
  if (line[hexAt + 64] !== 0x22) return null;
  return line.toString('latin1', hexAt, hexAt + 64);
}

/** Recomputes the mac of a raw line that has one (see storedMac). */
export function computedMac(line: Buffer, key: Buffer): string {
  return hmacHex(key, line.subarray(0, line.length - HASH_SUFFIX_LEN - MAC_FIELD_LEN), '}');
}

/** The mac audit.head carries for the chain position it names. */
export function headMac(key: Buffer, seq: number, hash: string): string {
  return hmacHex(key, `pamgate audit.head ${seq} ${hash}`);
}
