import { isAscii, isUtf8 } from 'node:buffer';
import { TextDecoder } from 'node:util';
import { brotliDecompressSync, gunzipSync, inflateRawSync, inflateSync, constants as zlib } from 'node:zlib';

export class BodyError extends Error {
  constructor(
    readonly status: 400 | 413,
    message: string,
  ) {
    super(message);
  }
}

// No real client stacks codings; a long stack only multiplies decompression work.
const MAX_CODINGS = 3;

/**
 * Undoes Content-Encoding (outermost last in the header), bounded so a small
 * compressed body cannot expand past `maxBytes`.
 */
export function decodeContent(body: Buffer, contentEncoding: string | undefined, maxBytes: number): Buffer {
  if (contentEncoding === undefined || contentEncoding === '') return body;
  const codings = contentEncoding
    .split(',')
    .map((c) => c.trim().toLowerCase())
    .filter((c) => c !== '' && c !== 'identity');
  if (codings.length > MAX_CODINGS) throw new BodyError(400, `more than ${MAX_CODINGS} content codings`);
  let out = body;
  for (let i = codings.length - 1; i >= 0; i--) {
    const opts = { maxOutputLength: maxBytes };
    try {
      switch (codings[i]) {
        case 'gzip':
        case 'x-gzip':
          out = gunzipSync(out, opts);
          break;
        case 'deflate':
          out = inflateEither(out, maxBytes);
          break;
        case 'br':
          out = brotliDecompressSync(out, { maxOutputLength: maxBytes, params: { [zlib.BROTLI_DECODER_PARAM_LARGE_WINDOW]: 0 } });
          break;
        default:
          throw new BodyError(400, `unsupported Content-Encoding "${codings[i]}"`);
      }
    } catch (err) {
      if (err instanceof BodyError) throw err;
      if (err instanceof RangeError || (err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
        throw new BodyError(413, `decompressed body exceeds ${maxBytes} bytes`);
      }
      throw new BodyError(400, `body is not valid ${codings[i]} data`);
    }
  }
  return out;
}

/**
 * Servers accept both zlib-wrapped and raw deflate under "deflate". Both readings are
 * tried; bytes that are valid as both but inflate differently are ambiguous.
 */
function inflateEither(data: Buffer, maxBytes: number): Buffer {
  const opts = { maxOutputLength: maxBytes };
  const wrapped = attempt(() => inflateSync(data, opts));
  const raw = attempt(() => inflateRawSync(data, opts));
  // A bomb is a bomb whichever framing it claims.
  if (wrapped instanceof RangeError) throw wrapped;
  if (raw instanceof RangeError) throw raw;
  if (wrapped instanceof Buffer && raw instanceof Buffer) {
    if (!wrapped.equals(raw)) throw new BodyError(400, 'deflate body reads differently as zlib and as raw deflate');
    return wrapped;
  }
  if (wrapped instanceof Buffer) return wrapped;
  if (raw instanceof Buffer) return raw;
  throw wrapped;
}

function attempt(fn: () => Buffer): Buffer | Error {
  try {
    return fn();
  } catch (err) {
    return err as Error;
  }
}

const UTF8_BOM = [0xef, 0xbb, 0xbf];
/** Charsets whose reading of an ASCII-only body is that body, byte for byte. */
const ASCII_COMPATIBLE = new Set(['us-ascii', 'ascii', 'iso-8859-1', 'latin1', 'iso-latin-1', 'l1', 'windows-1252', 'cp1252']);
const UTF16 = new Map([
  ['utf-16', 'utf-16le'],
  ['utf-16le', 'utf-16le'],
  ['utf-16be', 'utf-16be'],
  ['unicode', 'utf-16le'],
  ['unicodefffe', 'utf-16be'],
]);

/**
 * Text of a body as every lenient reader would read it: a BOM first, then a declared
 * UTF-16 charset, else strict UTF-8. A body that some plausible reader could decode to a
 * different text (another charset over non-ASCII bytes, UTF-7, EBCDIC…) is refused.
 */
export function decodeText(body: Buffer, contentType: string | undefined): string {
  if (body.length >= 3 && body[0] === UTF8_BOM[0] && body[1] === UTF8_BOM[1] && body[2] === UTF8_BOM[2]) {
    return strictDecode('utf-8', body.subarray(3));
  }
  if (body.length >= 4 && body[0] === 0xff && body[1] === 0xfe && body[2] === 0 && body[3] === 0) {
    throw new BodyError(400, 'UTF-32 bodies are not accepted');
  }
  if (body.length >= 2 && body[0] === 0xff && body[1] === 0xfe) return strictDecode('utf-16le', body.subarray(2));
  if (body.length >= 2 && body[0] === 0xfe && body[1] === 0xff) return strictDecode('utf-16be', body.subarray(2));
  const charset = declaredCharset(contentType);
  if (charset === null || charset === 'utf-8' || charset === 'utf8') return strictDecode('utf-8', body);
  const utf16 = UTF16.get(charset);
  if (utf16 !== undefined) return strictDecode(utf16, body);
  if (ASCII_COMPATIBLE.has(charset)) {
    if (!isAscii(body)) throw new BodyError(400, `charset "${charset}" with non-ASCII bytes is ambiguous; send UTF-8`);
    return strictDecode('utf-8', body);
  }
  throw new BodyError(400, `unsupported charset "${charset}"; send UTF-8`);
}

// Clients send a handful of distinct Content-Type values; remember what each declares.
const charsetOf = new Map<string, string | null>();

function declaredCharset(contentType: string | undefined): string | null {
  if (contentType === undefined) return null;
  let charset = charsetOf.get(contentType);
  if (charset === undefined) {
    charset = parseCharset(contentType);
    if (charsetOf.size >= 256) charsetOf.clear();
    charsetOf.set(contentType, charset);
  }
  return charset;
}

function parseCharset(contentType: string): string | null {
  if (!/charset/i.test(contentType)) return null;
  const all = [...contentType.matchAll(/;\s*charset\s*=\s*("?)([^";\s]*)\1/gi)].map((m) => m[2]!.toLowerCase());
  if (all.length === 0) throw new BodyError(400, 'unreadable charset parameter in Content-Type');
  if (all.some((c) => c !== all[0])) throw new BodyError(400, 'Content-Type declares more than one charset');
  return all[0]!;
}

// Decoders keep no state between whole-buffer decode() calls, so one per label serves every request.
const decoders = new Map<string, TextDecoder>();

function strictDecode(label: string, bytes: Buffer): string {
  if (label === 'utf-8') {
    if (!isUtf8(bytes)) throw new BodyError(400, 'body is not valid utf-8');
    return bytes.toString('utf8');
  }
  let decoder = decoders.get(label);
  if (decoder === undefined) {
    decoder = new TextDecoder(label, { fatal: true, ignoreBOM: true });
    decoders.set(label, decoder);
  }
  try {
    return decoder.decode(bytes);
  } catch {
    throw new BodyError(400, `body is not valid ${label}`);
  }
}
