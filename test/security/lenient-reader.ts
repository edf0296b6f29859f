import { brotliDecompressSync, gunzipSync, inflateRawSync, inflateSync } from 'node:zlib';
import { LenientObject, parseLenientJson, type LenientValue } from './lenient-json.js';

/**
 * How a lenient (IIS/ASP.NET-like) admin API reads a request, written for the test suite
 * independently of the gateway's classifier:
 * - path: case-insensitive, percent-decoded, repeated slashes collapsed, dot segments
 *   resolved, trailing slash ignored;
 * - body: read whatever the Content-Type; Content-Encoding gzip/deflate/br undone; UTF-8
 *   BOM, UTF-16 LE/BE BOM (or a declared UTF-16 charset) honoured, else UTF-8;
 * - JSON: property names case-insensitive, last duplicate wins, `\uXXXX` escapes;
 * - commands: CmdletInput (or a bare command object), arrays of them, and a JSON batch
 *   envelope `{"requests":[{"method","url","body"}]}` whose bodies may be objects or JSON
 *   strings (as OData JSON batch allows) — every command runs; a batch body whose request
 *   `headers` give a media type other than JSON or text/* is a base64url string of the bytes,
 *   which may carry a `content-encoding` (OData JSON Format 4.01 §19.1);
 * - cmdlet resolution: ignores case and a module prefix, treats U+2010–U+2015 and U+2212 as '-';
 *   a name that resolves to nothing and has no '-' of its own is tried again as `Get-<name>`
 *   (PowerShell's default verb), module-qualified or not.
 */

export interface RawRequest {
  method: string;
  target: string;
  headers: Readonly<Record<string, string | string[] | undefined>>;
  body: Buffer;
}

export interface Executed {
  /** Canonical cmdlet name, or `?<name as sent>` for a name that resolves to no known cmdlet. */
  cmdlet: string;
  gated: boolean;
  /** Bound parameters by lower-case name (last wins). */
  params: Record<string, unknown>;
}

export type Reading = { status: 200; executed: Executed[] } | { status: 400 | 404 | 415; error: string };

/** Cmdlets the reference upstream knows. */
export const KNOWN_CMDLETS = [
  'Get-Mailbox',
  'Set-Mailbox',
  'Remove-Mailbox',
  'Search-Mailbox',
  'Get-MailboxPermission',
  'Add-MailboxPermission',
  'Get-JournalRule',
  'New-JournalRule',
  'Set-JournalRule',
  'Remove-JournalRule',
  'Get-TransportRule',
  'New-TransportRule',
  'Set-TransportRule',
  'Remove-TransportRule',
  'Get-User',
] as const;

/** What TEST_POLICIES gates, spelled out here rather than derived from the gateway's code. */
export const GATED_CMDLETS: ReadonlySet<string> = new Set([
  'New-JournalRule',
  'Set-JournalRule',
  'Remove-JournalRule',
  'Add-MailboxPermission',
  'Remove-Mailbox',
  'Search-Mailbox',
  'Get-TransportRule',
  'New-TransportRule',
  'Set-TransportRule',
  'Remove-TransportRule',
]);

const KNOWN_BY_UPPER = new Map(KNOWN_CMDLETS.map((c) => [c.toUpperCase(), c]));
const DASHES = /[\u2010-\u2015\u2212]/g;

export function resolveCmdlet(name: string): string | null {
  let s = name.trim();
  const prefix = s.lastIndexOf('\\');
  if (prefix >= 0) s = s.slice(prefix + 1);
  const found = KNOWN_BY_UPPER.get(s.replace(DASHES, '-').toUpperCase());
  if (found !== undefined || s.includes('-')) return found ?? null;
  return KNOWN_BY_UPPER.get(`GET-${s.replace(DASHES, '-').toUpperCase()}`) ?? null;
}

export function readLeniently(req: RawRequest): Reading {
  const path = lenientPath(req.target);
  if (path === null) return { status: 400, error: 'bad path encoding' };
  const isInvoke = /^\/adminapi\/[^/]+\/[^/]+\/invokecommand$/.test(path);
  const isBatch = /^\/adminapi\/[^/]+(\/[^/]+)?\/\$batch$/.test(path);
  if (!isInvoke && !isBatch) return { status: 404, error: `no route ${path}` };
  let body: Buffer;
  try {
    body = decodeContent(req.body, header(req, 'content-encoding'));
  } catch (err) {
    return { status: 415, error: (err as Error).message };
  }
  let doc: LenientValue;
  try {
    doc = parseLenientJson(decodeText(body, header(req, 'content-type')));
  } catch (err) {
    return { status: 400, error: `not JSON: ${(err as Error).message}` };
  }
  const executed: Executed[] = [];
  try {
    collectRoot(doc, executed);
  } catch (err) {
    return { status: 400, error: (err as Error).message };
  }
  return { status: 200, executed };
}

function header(req: RawRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

export function lenientPath(target: string): string | null {
  let p = target;
  const absolute = /^[a-z][a-z0-9+.-]*:\/\/[^/]*/i.exec(p);
  if (absolute) p = p.slice(absolute[0].length) || '/';
  p = p.split(/[?#]/)[0]!;
  try {
    p = decodeURIComponent(p);
  } catch {
    return null;
  }
  const segments: string[] = [];
  for (const seg of p.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') segments.pop();
    else segments.push(seg);
  }
  return ('/' + segments.join('/')).toLowerCase();
}

function decodeContent(body: Buffer, encoding: string | undefined): Buffer {
  const codings = (encoding ?? '').split(',').map((c) => c.trim().toLowerCase()).filter((c) => c !== '' && c !== 'identity');
  let out = body;
  for (const coding of codings.reverse()) {
    if (coding === 'gzip' || coding === 'x-gzip') out = gunzipSync(out);
    else if (coding === 'br') out = brotliDecompressSync(out);
    else if (coding === 'deflate') {
      try {
        out = inflateSync(out);
      } catch {
        out = inflateRawSync(out);
      }
    } else throw new Error(`unsupported content-encoding ${coding}`);
  }
  return out;
}

function decodeText(body: Buffer, contentType: string | undefined): string {
  if (body[0] === 0xef && body[1] === 0xbb && body[2] === 0xbf) return new TextDecoder('utf-8').decode(body.subarray(3));
  if (body[0] === 0xff && body[1] === 0xfe) return new TextDecoder('utf-16le').decode(body.subarray(2));
  if (body[0] === 0xfe && body[1] === 0xff) return new TextDecoder('utf-16be').decode(body.subarray(2));
  const charset = /charset\s*=\s*"?([\w-]+)/i.exec(contentType ?? '')?.[1]?.toLowerCase();
  if (charset === 'utf-16' || charset === 'utf-16le') return new TextDecoder('utf-16le').decode(body);
  if (charset === 'utf-16be') return new TextDecoder('utf-16be').decode(body);
  return new TextDecoder('utf-8').decode(body);
}

function collectRoot(doc: LenientValue, out: Executed[]): void {
  if (doc instanceof LenientObject) {
    const requests = doc.get('requests');
    if (Array.isArray(requests)) {
      for (const r of requests) if (r instanceof LenientObject) collectUnit(batchBody(r), out);
      return;
    }
  }
  collectUnit(doc, out);
}

/** A batch request's body as the dispatcher hands it on: JSON and text/* as given, other media types base64url-decoded (then their content-encoding undone). */
function batchBody(request: LenientObject): LenientValue {
  const body = request.get('body') ?? null;
  const headers = request.get('headers');
  const header = (name: string): string | undefined => {
    if (!(headers instanceof LenientObject)) return undefined;
    const v = headers.entries.find(([k]) => k.toLowerCase() === name)?.[1];
    return typeof v === 'string' ? v : undefined;
  };
  const type = header('content-type');
  if (typeof body !== 'string' || type === undefined || /^\s*(application\/([\w.+-]*\+)?json|text\/)/i.test(type)) return body;
  const bytes = decodeContent(Buffer.from(body, 'base64url'), header('content-encoding'));
  return decodeText(bytes, type);
}

/** A command carrier: a command object, {CmdletInput: …}, an array of carriers, or a JSON string of one. */
function collectUnit(value: LenientValue, out: Executed[]): void {
  if (typeof value === 'string') return collectUnit(parseLenientJson(value.trim()), out);
  if (Array.isArray(value)) {
    for (const item of value) collectUnit(item, out);
    return;
  }
  if (!(value instanceof LenientObject)) return;
  const input = value.get('CmdletInput');
  if (input !== undefined) return collectUnit(input, out);
  if (value.get('CmdletName') !== undefined) out.push(run(value));
}

function run(command: LenientObject): Executed {
  const name = command.get('CmdletName');
  if (typeof name !== 'string') throw new Error('CmdletName must be a string');
  const canonical = resolveCmdlet(name);
  return { cmdlet: canonical ?? `?${name}`, gated: canonical !== null && GATED_CMDLETS.has(canonical), params: bind(command.get('Parameters')) };
}

function bind(parameters: LenientValue | undefined): Record<string, unknown> {
  const out = Object.create(null) as Record<string, unknown>;
  if (!(parameters instanceof LenientObject)) return out;
  for (const [key, value] of parameters.entries) {
    // Case-insensitive as .NET compares (upper-casing, so ſ binds as s); stored lower-case for reading.
    const name = key.trim().replace(/^[-\u2010-\u2015\u2212]/, '').toUpperCase().toLowerCase();
    out[name] = value instanceof LenientObject ? Object.fromEntries(value.entries) : value;
  }
  return out;
}
