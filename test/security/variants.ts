import { brotliCompressSync, deflateRawSync, deflateSync, gzipSync } from 'node:zlib';
import fc from 'fast-check';

/**
 * fast-check arbitraries for spellings of a gated request, and their rendering to the exact
 * request bytes: cmdlet-name spellings, property-name spellings, duplicate keys, escapes,
 * wrappers (arrays, batches, nested JSON strings), request targets, content codings, charsets.
 */

export interface RenderedRequest {
  target: string;
  headers: Record<string, string>;
  body: Buffer;
  /** What was generated, for failure reports. */
  describe: string;
}

/** Dashes PowerShell reads as '-', and compatibility forms that only NFKC maps to one. */
const DASHES = ['-', '-', '-', '\u2010', '\u2011', '\u2012', '\u2013', '\u2014', '\u2015', '\u2212'];
const COMPAT_DASHES = ['\uFE63', '\uFF0D', '\uFE58'];
const PREFIXES = ['', '', 'Exchange\\', 'Microsoft.Exchange.Management\\', 'ExchangeOnlineManagement\\', 'tmp_1a2b.x\\', '\\', 'a\\b\\'];
const PADDING = ['', '', '', ' ', '\u00A0', '\t', '\u3000', '\u2003'];
const INVISIBLE = ['\u200B', '\u200C', '\u200D', '\u2060', '\uFEFF', '\u00AD', '\u200E'];

const fullwidth = (c: string): string => (/[A-Za-z]/.test(c) ? String.fromCharCode(c.charCodeAt(0) + 0xfee0) : c);
/** Characters whose upper case is an ASCII letter: ı → I, ſ → S, K (Kelvin) → K. */
const caseTwin = (c: string): string => ({ i: '\u0131', s: '\u017F', k: '\u212A' })[c.toLowerCase()] ?? c;

/** A spelling of `base` (Verb-Noun) that some reader could take for it; `Get-X` may also be spelled `X` (PowerShell's default verb). */
export function nameSpelling(bases: readonly string[]): fc.Arbitrary<string> {
  return fc
    .record({
      base: fc.constantFrom(...bases),
      caseFlips: fc.array(fc.boolean(), { minLength: 40, maxLength: 40 }),
      dash: fc.oneof({ weight: 9, arbitrary: fc.constantFrom(...DASHES) }, { weight: 1, arbitrary: fc.constantFrom(...COMPAT_DASHES) }),
      prefix: fc.constantFrom(...PREFIXES),
      verbless: fc.integer({ min: 0, max: 2 }),
      lead: fc.constantFrom(...PADDING),
      trail: fc.constantFrom(...PADDING),
      widen: fc.array(fc.integer({ min: 0, max: 199 }), { minLength: 40, maxLength: 40 }),
      invisible: fc.oneof(
        { weight: 9, arbitrary: fc.constant(null) },
        { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...INVISIBLE), fc.integer({ min: 0, max: 30 })) },
      ),
    })
    .map(({ base, caseFlips, dash, prefix, verbless, lead, trail, widen, invisible }) => {
      const noun = verbless === 0 && /^get-/i.test(base) ? base.slice(4) : base;
      let name = [...noun]
        .map((c, i) => {
          if (c === '-') return dash;
          const flipped = caseFlips[i] ? (c === c.toLowerCase() ? c.toUpperCase() : c.toLowerCase()) : c;
          const w = widen[i] ?? 0;
          return w === 199 ? fullwidth(flipped) : w >= 190 ? caseTwin(flipped) : flipped;
        })
        .join('');
      if (invisible) name = name.slice(0, invisible[1] % (name.length + 1)) + invisible[0] + name.slice(invisible[1] % (name.length + 1));
      return `${lead}${prefix}${name}${trail}`;
    });
}

/** A property name spelled with random case, case twins and \u escapes. */
export function keySpelling(key: string): fc.Arbitrary<string> {
  return fc
    .record({ flips: fc.array(fc.boolean(), { minLength: key.length, maxLength: key.length }), twins: fc.array(fc.integer({ min: 0, max: 12 }), { minLength: key.length, maxLength: key.length }), escapes: escapeMask(key.length) })
    .map(({ flips, twins, escapes }) => {
      const spelled = [...key].map((c, i) => (twins[i] === 12 ? caseTwin(c) : flips[i] ? c.toUpperCase() : c.toLowerCase())).join('');
      return jsonString(spelled, escapes);
    });
}

function escapeMask(length: number): fc.Arbitrary<boolean[]> {
  return fc.oneof(
    { weight: 3, arbitrary: fc.constant<boolean[]>([]) },
    { weight: 1, arbitrary: fc.array(fc.boolean(), { minLength: length, maxLength: length }) },
  );
}

/** A JSON string literal for `s`, with the characters `escapes` marks written as \uXXXX. */
export function jsonString(s: string, escapes: readonly boolean[] = []): string {
  let out = '"';
  let i = 0;
  for (const ch of s) {
    const units = [...Array(ch.length).keys()].map((k) => ch.charCodeAt(k));
    const mustEscape = ch === '"' || ch === '\\' || units[0]! < 0x20;
    out += mustEscape || escapes[i] ? units.map((u) => `\\u${u.toString(16).padStart(4, '0')}`).join('') : ch;
    i++;
  }
  return out + '"';
}

export type Wrapper = 'plain' | 'bare' | 'array' | 'inputArray' | 'batch' | 'batchString' | 'inputString' | 'topString';
export type Duplicate = 'none' | 'decoyBefore' | 'decoyAfter' | 'inputDecoyBefore';

export interface CommandSpec {
  nameKey: string;
  name: string;
  nameEscapes: boolean[];
  paramsKey: string;
  params: string;
  dup: Duplicate;
}

const DECOY = '{"CmdletName":"Get-Mailbox"}';

/** A command object's text: `{"CmdletName":…,"Parameters":…}`, with a decoy duplicate when asked. */
export function commandText(c: CommandSpec): string {
  const own = `${c.nameKey}:${jsonString(c.name, c.nameEscapes)},${c.paramsKey}:${c.params}`;
  if (c.dup === 'decoyBefore') return `{"CmdletName":"Get-Mailbox",${own}}`;
  if (c.dup === 'decoyAfter') return `{${own},"CmdletName":"Get-Mailbox"}`;
  return `{${own}}`;
}

export function documentText(command: string, inputKey: string, wrapper: Wrapper, dup: Duplicate): string {
  const input = dup === 'inputDecoyBefore' ? `{"CmdletInput":${DECOY},${inputKey}:${command}}` : `{${inputKey}:${command}}`;
  const batch = (body: string) => `{"requests":[{"id":"1","method":"POST","url":"/adminapi/beta/t/InvokeCommand","body":{"CmdletInput":${DECOY}}},{"id":"2","method":"POST","url":"/adminapi/beta/t/InvokeCommand","body":${body}}]}`;
  switch (wrapper) {
    case 'plain':
      return input;
    case 'bare':
      return command;
    case 'array':
      return `[{"CmdletInput":${DECOY}},${input}]`;
    case 'inputArray':
      return `{${inputKey}:[${DECOY},${command}]}`;
    case 'batch':
      return batch(input);
    case 'batchString':
      return batch(JSON.stringify(input));
    case 'inputString':
      return `{${inputKey}:${JSON.stringify(command)}}`;
    case 'topString':
      return JSON.stringify(input);
  }
}

/** A request target that a lenient server would route to `endpoint`. */
export function targetSpelling(endpoint: 'InvokeCommand' | '$batch'): fc.Arbitrary<string> {
  return fc
    .record({
      version: fc.constantFrom('beta', 'v1.0'),
      tenant: fc.constantFrom('contoso.onmicrosoft.com', 't'),
      flips: fc.array(fc.boolean(), { minLength: 80, maxLength: 80 }),
      encode: fc.array(fc.integer({ min: 0, max: 11 }), { minLength: 80, maxLength: 80 }),
      slashes: fc.array(fc.constantFrom('/', '/', '/', '//', '/./', '/x/../', '%2F', '%2f'), { minLength: 4, maxLength: 4 }),
      trailing: fc.constantFrom('', '', '/', '/.', '?api-version=2', '#x'),
      absolute: fc.constantFrom('', '', '', 'http://evil.example', 'HTTPS://u:p@evil.example:8443'),
    })
    .map(({ version, tenant, flips, encode, slashes, trailing, absolute }) => {
      const segments = ['adminapi', version, tenant, endpoint];
      let at = 0;
      const spell = (seg: string): string =>
        [...seg]
          .map((c) => {
            const i = at++;
            const cased = flips[i] ? c.toUpperCase() : c.toLowerCase();
            const e = encode[i] ?? 0;
            if (e === 11) return `%${cased.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`;
            if (e === 10) return `%${cased.charCodeAt(0).toString(16).padStart(2, '0')}`;
            return cased;
          })
          .join('');
      // The first separator must be a real slash for origin-form.
      const path = segments.map((seg, i) => (i === 0 ? '/' : slashes[i]!) + spell(seg)).join('');
      return `${absolute}${path}${trailing}`;
    });
}

export type Coding = 'none' | 'gzip' | 'x-gzip' | 'deflate' | 'deflate-raw' | 'br' | 'gzip, br';
export type Charset = 'utf-8' | 'utf-8 BOM' | 'utf-16le BOM' | 'utf-16be BOM' | 'utf-16le label';

export function encodeBody(text: string, charset: Charset, coding: Coding): { body: Buffer; headers: Record<string, string> } {
  const headers: Record<string, string> = {};
  let bytes: Buffer;
  switch (charset) {
    case 'utf-8':
      bytes = Buffer.from(text, 'utf8');
      break;
    case 'utf-8 BOM':
      bytes = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text, 'utf8')]);
      break;
    case 'utf-16le BOM':
      bytes = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(text, 'utf16le')]);
      break;
    case 'utf-16be BOM':
      bytes = Buffer.concat([Buffer.from([0xfe, 0xff]), Buffer.from(text, 'utf16le').swap16()]);
      break;
    case 'utf-16le label':
      bytes = Buffer.from(text, 'utf16le');
      headers['content-type'] = 'application/json; charset=utf-16le';
      break;
  }
  switch (coding) {
    case 'none':
      break;
    case 'gzip':
    case 'x-gzip':
      bytes = gzipSync(bytes);
      headers['content-encoding'] = coding;
      break;
    case 'deflate':
      bytes = deflateSync(bytes);
      headers['content-encoding'] = 'deflate';
      break;
    case 'deflate-raw':
      bytes = deflateRawSync(bytes);
      headers['content-encoding'] = 'deflate';
      break;
    case 'br':
      bytes = brotliCompressSync(bytes);
      headers['content-encoding'] = 'br';
      break;
    case 'gzip, br':
      bytes = brotliCompressSync(gzipSync(bytes));
      headers['content-encoding'] = 'gzip, br';
      break;
  }
  return { body: bytes, headers };
}

const CONTENT_TYPES = ['application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', ''];

/** A whole gated request: one of `bases` (all gated) spelled every way at every layer. */
export function gatedRequest(bases: readonly string[], params: fc.Arbitrary<string> = fc.constant('{}')): fc.Arbitrary<RenderedRequest> {
  return fc
    .record({
      name: nameSpelling(bases),
      nameEscapes: escapeMask(60),
      nameKey: keySpelling('CmdletName'),
      paramsKey: keySpelling('Parameters'),
      inputKey: keySpelling('CmdletInput'),
      params,
      dup: fc.constantFrom<Duplicate>('none', 'none', 'none', 'decoyBefore', 'decoyAfter', 'inputDecoyBefore'),
      wrapper: fc.constantFrom<Wrapper>('plain', 'plain', 'plain', 'bare', 'array', 'inputArray', 'batch', 'batchString', 'inputString', 'topString'),
      invokeTarget: targetSpelling('InvokeCommand'),
      batchTarget: targetSpelling('$batch'),
      useBatchEndpoint: fc.boolean(),
      coding: fc.constantFrom<Coding>('none', 'none', 'none', 'gzip', 'x-gzip', 'deflate', 'deflate-raw', 'br', 'gzip, br'),
      charset: fc.constantFrom<Charset>('utf-8', 'utf-8', 'utf-8', 'utf-8 BOM', 'utf-16le BOM', 'utf-16be BOM', 'utf-16le label'),
      contentType: fc.constantFrom(...CONTENT_TYPES),
    })
    .map((v) => {
      const command = commandText({ nameKey: v.nameKey, name: v.name, nameEscapes: v.nameEscapes, paramsKey: v.paramsKey, params: v.params, dup: v.dup });
      const text = documentText(command, v.inputKey, v.wrapper, v.dup);
      const { body, headers } = encodeBody(text, v.charset, v.coding);
      if (v.contentType !== '' && headers['content-type'] === undefined) headers['content-type'] = v.contentType;
      const target = v.useBatchEndpoint ? v.batchTarget : v.invokeTarget;
      return { target, headers, body, describe: JSON.stringify({ target, headers, text, charset: v.charset, coding: v.coding }) };
    });
}

/** Parameters for Add-MailboxPermission that try to bind AccessRights to something other than ReadPermission. */
export function smuggledAccessRights(): fc.Arbitrary<string> {
  const spelling = fc
    .record({ key: keySpelling('AccessRights'), dash: fc.constantFrom('', '', '-', '\u2013', '\u2212', '\uFF0D') })
    .map(({ key, dash }) => (dash ? `"${dash}${key.slice(1)}` : key));
  const value = fc.constantFrom('"ReadPermission"', '"FullAccess"', '"readpermission"', '["ReadPermission","FullAccess"]', '"ReadPermission,FullAccess"', '["ReadPermission"]');
  return fc.array(fc.tuple(spelling, value), { minLength: 1, maxLength: 3 }).map((pairs) => `{"Identity":"ceo@contoso.com","User":"dave@contoso.com",${pairs.map(([k, v]) => `${k}:${v}`).join(',')}}`);
}
