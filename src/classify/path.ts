import { isUtf8 } from 'node:buffer';
import { IGNORABLE } from './json.js';

/**
 * Request-target normalisation: the most any lenient server (IIS/ASP.NET) could make of
 * a path, so a gateable endpoint is recognised behind every spelling that reaches it.
 */

const MAX_DECODE_ROUNDS = 4;
// Nothing to decode, fold or resolve (no dot segments, no trailing dots that matter): the common case, kept cheap.
const SIMPLE_PATH = /^(\/[A-Za-z0-9_$-][A-Za-z0-9_.$-]*)+\/?$/;
const GATEABLE = /invokecommand|\$batch|\/batch(?![a-z0-9])/;

/** Whether a request target could reach an endpoint that runs commands. Unreadable targets could. */
export function isGateableTarget(target: string): boolean {
  if (SIMPLE_PATH.test(target)) return GATEABLE.test(target.toLowerCase());
  // Raw bytes in a header value (X-Original-URL…) arrive one char per byte; a server may read them as UTF-8.
  if (/[\u0080-\u00ff]/.test(target) && /^[\u0000-\u00ff]*$/.test(target)) {
    const bytes = Buffer.from(target, 'latin1');
    if (!isUtf8(bytes) || gateablePath(bytes.toString('utf8'))) return true;
  }
  return gateablePath(target);
}

function gateablePath(target: string): boolean {
  const decoded = decodedPath(target);
  if (decoded === null) return true;
  // Checked before and after segment resolution: a server that ignores `;` parameters or
  // resolves dot segments differently must not turn a gateable path into a harmless one.
  return GATEABLE.test(decoded) || GATEABLE.test(resolveSegments(decoded));
}

/**
 * Query and fragment removed; fully percent-decoded; Unicode-folded. An absolute-form target
 * (`http://host/adminapi/...`, refused by the listener but audited when gateable) keeps its
 * authority: where the host ends is what parsers disagree on (`http://a%2fadminapi%2f…`).
 */
function decodedPath(target: string): string | null {
  let path = target;
  const cut = path.search(/[?#]/);
  if (cut >= 0) path = path.slice(0, cut);

  for (let round = 0; round < MAX_DECODE_ROUNDS; round++) {
    const decoded = percentDecode(path);
    if (decoded === null) return null;
    if (decoded === path) break;
    path = decoded;
  }
  if (/%[0-9a-f]{2}|%u[0-9a-f]{4}/i.test(path)) return null; // still encoded after the bounded rounds

  // Case folding can leave a combining mark (İ lower-cases to i + U+0307): dropped, as ignorable characters are.
  return path
    .normalize('NFKC')
    .replace(/\\/g, '/')
    .replace(IGNORABLE, '')
    .toUpperCase()
    .toLowerCase()
    .replace(/\p{M}/gu, '');
}

function resolveSegments(path: string): string {
  const out: string[] = [];
  for (let segment of path.split('/')) {
    const semi = segment.indexOf(';'); // matrix/path parameters
    if (semi >= 0) segment = segment.slice(0, semi);
    segment = withoutTrailingDotsAndSpaces(segment); // as Windows reads a file name
    if (segment === '' || segment === '.') continue;
    if (segment === '..') {
      out.pop();
      continue;
    }
    out.push(segment);
  }
  return '/' + out.join('/');
}

/** `segment` less its trailing dots and white space, unless that is all it is. Scans back once. */
function withoutTrailingDotsAndSpaces(segment: string): string {
  let end = segment.length;
  while (end > 0 && isDotOrSpace(segment.charCodeAt(end - 1))) end--;
  return end === 0 || end === segment.length ? segment : segment.slice(0, end);
}

/** '.' or what `\s` matches (no white space lies outside the BMP). */
function isDotOrSpace(c: number): boolean {
  if (c === 0x2e || c === 0x20 || (c >= 0x09 && c <= 0x0d)) return true;
  if (c < 0xa0) return false;
  return c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff;
}

/** Decodes %XX (as UTF-8) and IIS-style %uXXXX; null when the bytes are not valid UTF-8. */
function percentDecode(s: string): string | null {
  if (!s.includes('%')) return s;
  try {
    const withU = s.replace(/%u([0-9a-f]{4})/gi, (_m, hex: string) => encodeURIComponent(String.fromCharCode(parseInt(hex, 16))));
    return withU.replace(/(%[0-9a-f]{2})+/gi, (run) => decodeURIComponent(run));
  } catch {
    return null;
  }
}
