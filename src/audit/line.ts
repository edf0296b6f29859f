import * as crypto from 'node:crypto';

/** `prev` of the first line. */
export const GENESIS: string = '0'.repeat(64);

/** Length of the `,"hash":"<64 hex>"}` suffix every stored line ends with (before '\n'). */
export const HASH_SUFFIX_LEN = 75;
const HASH_KEY = ',"hash":"';

/** Fields the writer owns; an event carrying one of them is refused rather than silently dropped. */
const RESERVED: ReadonlySet<string> = new Set(['seq', 'time', 'prev', 'mac', 'hash']);
/** Written in fixed positions right after `time`, so skipped when copying extras. */
const POSITIONAL: ReadonlySet<string> = new Set(['type', 'actor', 'task', 'policy', 'requestId', 'remote']);

// crypto.hash (Node >= 20.12) skips the Hash object; fall back for older 20.x.
export const sha256hex: (data: string) => string =
  typeof crypto.hash === 'function'
    ? (data: string): string => crypto.hash('sha256', data, 'hex')
    : (data: string): string => crypto.createHash('sha256').update(data).digest('hex');

function nullable(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  return JSON.stringify(value) ?? 'null';
}

/**
 * Serialises everything of an event between `time` and `prev`:
 * `,"type":…,"actor":…,"task":…,"policy":…,"requestId":…,"remote":…[,extras]`.
 * Done at append time so a bad event fails only its own append and later mutation of the
 * caller's object cannot change what is logged. Throws on a non-serialisable event.
 */
export function serialiseFields(event: Record<string, unknown>): string {
  const type = event['type'];
  if (typeof type !== 'string' || type.length === 0) throw new TypeError('audit event needs a non-empty string type');
  let out =
    ',"type":' + JSON.stringify(type) +
    ',"actor":' + nullable(event['actor']) +
    ',"task":' + nullable(event['task']) +
    ',"policy":' + nullable(event['policy']) +
    ',"requestId":' + nullable(event['requestId']) +
    ',"remote":' + nullable(event['remote']);
  for (const key in event) {
    if (!Object.prototype.hasOwnProperty.call(event, key) || POSITIONAL.has(key)) continue;
    if (RESERVED.has(key)) throw new TypeError(`audit event field "${key}" is reserved`);
    const value = JSON.stringify(event[key]);
    if (value === undefined) continue; // undefined/function/symbol: omitted, as JSON.stringify would
    out += ',' + JSON.stringify(key) + ':' + value;
  }
  return out;
}

/** The line up to and including `prev`, without the closing brace. */
export function lineStart(seq: number, time: string, fields: string, prev: string): string {
  return '{"seq":' + seq + ',"time":"' + time + '"' + fields + ',"prev":"' + prev + '"';
}

/** hash = sha256 of the line as it would be written without the hash field. */
export function hashOfStart(start: string): string {
  return sha256hex(start + '}');
}

export function sealLine(start: string, hash: string): string {
  return start + HASH_KEY + hash + '"}\n';
}

function isLowerHex(byte: number): boolean {
  return (byte >= 0x30 && byte <= 0x39) || (byte >= 0x61 && byte <= 0x66);
}

/** The hash stored in a raw line (no '\n'), or null when the suffix is not exactly `,"hash":"<64 hex>"}`. */
export function storedHash(line: Buffer): string | null {
  const len = line.length;
  if (len < HASH_SUFFIX_LEN + 1) return null;
  const at = len - HASH_SUFFIX_LEN;
  if (line.toString('latin1', at, at + HASH_KEY.length) !== HASH_KEY) return null;
  const hexAt = at + HASH_KEY.length;
  for (let i = hexAt; i < hexAt + 64; i++) if (!isLowerHex(line[i]!)) return null;
  if (line[len - 2] !== 0x22 || line[len - 1] !== 0x7d) return null; // '"}'
  return line.toString('latin1', hexAt, hexAt + 64);
}

/** Recomputes the hash from the raw bytes: strip the hash suffix, add '}', sha256. No re-serialising. */
export function computedHash(line: Buffer): string {
  return crypto
    .createHash('sha256')
    .update(line.subarray(0, line.length - HASH_SUFFIX_LEN))
    .update('}')
    .digest('hex');
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Parses a stored line just enough to continue the chain from it (its hash is not recomputed); null if it is not a well-formed line. */
export function parseStoredLine(line: Buffer): { seq: number; hash: string; prev: unknown } | null {
  const hash = storedHash(line);
  if (hash === null) return null;
  let obj: unknown;
  try {
    obj = JSON.parse(line.toString('utf8'));
  } catch {
    return null;
  }
  if (!isRecord(obj)) return null;
  const seq = obj['seq'];
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 1) return null;
  return { seq, hash, prev: obj['prev'] };
}
