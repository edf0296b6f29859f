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
          // Servers accept both zlib-wrapped and raw deflate under this name.
          out = out.length > 0 && (out[0]! & 0x0f) === 8 ? inflateSync(out, opts) : inflateRawSync(out, opts);
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

const UTF8_BOM = [0xef, 0xbb, 0xbf];

/** Text of a body the way a lenient server would read it: BOM first, then the declared charset, else strict UTF-8. */
export function decodeText(body: Buffer, contentType: string | undefined): string {
  if (body.length >= 3 && body[0] === UTF8_BOM[0] && body[1] === UTF8_BOM[1] && body[2] === UTF8_BOM[2]) {
    return strictDecode('utf-8', body.subarray(3));
  }
  if (body.length >= 4 && body[0] === 0xff && body[1] === 0xfe && body[2] === 0 && body[3] === 0) {
    throw new BodyError(400, 'UTF-32 bodies are not accepted');
  }
  if (body.length >= 2 && body[0] === 0xff && body[1] === 0xfe) return strictDecode('utf-16le', body.subarray(2));
  if (body.length >= 2 && body[0] === 0xfe && body[1] === 0xff) return strictDecode('utf-16be', body.subarray(2));
  const charset = /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(contentType ?? '')?.[1]?.toLowerCase();
  return strictDecode(charset ?? 'utf-8', body);
}

function strictDecode(label: string, bytes: Buffer): string {
  let decoder: TextDecoder;
  try {
    decoder = new TextDecoder(label, { fatal: true, ignoreBOM: true });
  } catch {
    throw new BodyError(400, `unsupported charset "${label}"`);
  }
  try {
    return decoder.decode(bytes);
  } catch {
    throw new BodyError(400, `body is not valid ${label}`);
  }
}
