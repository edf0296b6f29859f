import { readFile, realpath } from 'node:fs/promises';
import { dirname, relative, resolve, sep, basename, isAbsolute } from 'node:path';

/** Shortest key accepted: HMAC-SHA256 gains nothing from more than 32 bytes and must not get fewer. */
export const MIN_AUDIT_KEY_BYTES = 32;

/** The audit key file cannot serve (an operator's error: the message says what to fix). */
export class AuditKeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuditKeyError';
    this.stack = `${this.name}: ${this.message}`;
  }
}

/**
 * Reads the keyed chain's HMAC key: the file's bytes, without trailing whitespace. `dataDir`, when
 * given, must exist, and the file must lie outside it, or whoever can rewrite the data dir could read the key and
 * recompute a chain that verifies.
 */
export async function readAuditKey(file: string, opts: { dataDir?: string; what: string }): Promise<Buffer> {
  const { dataDir, what } = opts;
  let key: Buffer;
  let real: string;
  try {
    real = await realpath(file);
    key = await readFile(real);
  } catch (err) {
    throw new AuditKeyError(`cannot read ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (dataDir !== undefined && isInside(real, await realpath(dataDir))) {
    throw new AuditKeyError(`${what} ${file} is inside the data dir ${resolve(dataDir)}: keep the key where whoever can rewrite the data dir cannot read it`);
  }
  let end = key.length;
  while (end > 0 && (key[end - 1] === 0x0a || key[end - 1] === 0x0d || key[end - 1] === 0x20 || key[end - 1] === 0x09)) end--;
  if (end < MIN_AUDIT_KEY_BYTES) {
    throw new AuditKeyError(`${what} ${file} holds ${end} bytes; the key needs at least ${MIN_AUDIT_KEY_BYTES} (e.g. \`openssl rand -hex 32 > ${basename(file)}\` in ${dirname(file)})`);
  }
  return key.subarray(0, end);
}

function isInside(path: string, dir: string): boolean {
  const rel = relative(dir, path);
  return rel === '' || (rel !== '..' && !rel.startsWith('..' + sep) && !isAbsolute(rel));
}
