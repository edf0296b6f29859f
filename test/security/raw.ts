import { connect } from 'node:net';

/** Raw HTTP/1.x over node:net: the bytes go out exactly as written (fetch would normalise them). */

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export interface Exchange {
  /** Final responses, in order. */
  responses: RawResponse[];
  /** 1xx responses (100 Continue). */
  interim: RawResponse[];
  /** The server closed the connection (before our own timeout). */
  closed: boolean;
  timedOut: boolean;
}

export type Step = string | Buffer | { waitMs: number } | { waitFor: number /* responses */ };

/**
 * Writes `steps` to a fresh connection (strings/buffers are written, waits pause) and
 * collects the responses until `expect` full responses arrived, the server closed, or
 * `timeoutMs` passed.
 */
export async function exchange(baseUrl: string, steps: Step | Step[], opts: { expect?: number; timeoutMs?: number } = {}): Promise<Exchange> {
  const { hostname, port } = new URL(baseUrl);
  const expect = opts.expect ?? 1;
  const socket = connect(Number(port), hostname);
  let buffered = Buffer.alloc(0);
  const responses: RawResponse[] = [];
  let closed = false;
  let timedOut = false;
  let wake: (() => void) | null = null;

  const done = new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      timedOut = true;
      resolve();
    }, opts.timeoutMs ?? 10_000);
    const finish = (): void => {
      clearTimeout(timer);
      resolve();
    };
    socket.on('data', (d: Buffer) => {
      buffered = Buffer.concat([buffered, d]);
      for (let parsed = parseResponse(buffered); parsed; parsed = parseResponse(buffered)) {
        buffered = buffered.subarray(parsed.used);
        responses.push(parsed.response);
        wake?.();
      }
      if (finalCount(responses) >= expect) finish();
    });
    socket.on('close', () => {
      closed = true;
      wake?.();
      finish();
    });
    socket.on('error', () => undefined); // EPIPE/ECONNRESET after the server gave up: `closed` tells the story
  });

  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  for (const step of Array.isArray(steps) ? steps : [steps]) {
    if (closed) break;
    if (typeof step === 'string' || Buffer.isBuffer(step)) {
      socket.write(step);
    } else if ('waitMs' in step) {
      await new Promise((r) => setTimeout(r, step.waitMs));
    } else {
      while (responses.length < step.waitFor && !closed) await new Promise<void>((r) => (wake = r));
    }
  }
  await done;
  socket.destroy();
  return { responses: responses.filter((r) => r.status >= 200), interim: responses.filter((r) => r.status < 200), closed: closed && !timedOut, timedOut };
}

function finalCount(responses: RawResponse[]): number {
  return responses.filter((r) => r.status >= 200).length;
}

/** One complete response at the start of `buf`, or null if more bytes are needed. */
function parseResponse(buf: Buffer): { response: RawResponse; used: number } | null {
  const headEnd = buf.indexOf('\r\n\r\n');
  if (headEnd < 0) return null;
  const lines = buf.subarray(0, headEnd).toString('latin1').split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1] ?? NaN);
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  let at = headEnd + 4;
  if (status < 200 || status === 204 || status === 304) return { response: { status, headers, body: '' }, used: at };
  if (headers['transfer-encoding']?.toLowerCase() === 'chunked') {
    const parts: Buffer[] = [];
    for (;;) {
      const lineEnd = buf.indexOf('\r\n', at);
      if (lineEnd < 0) return null;
      const size = parseInt(buf.subarray(at, lineEnd).toString('latin1'), 16);
      if (buf.length < lineEnd + 2 + size + 2) return null;
      parts.push(buf.subarray(lineEnd + 2, lineEnd + 2 + size));
      at = lineEnd + 2 + size + 2;
      if (size === 0) return { response: { status, headers, body: Buffer.concat(parts).toString('utf8') }, used: at };
    }
  }
  const length = Number(headers['content-length'] ?? 0);
  if (buf.length < at + length) return null;
  return { response: { status, headers, body: buf.subarray(at, at + length).toString('utf8') }, used: at + length };
}

export interface RequestSpec {
  method?: string;
  target: string;
  headers?: Record<string, string | number>;
  body?: string | Buffer;
  version?: '1.0' | '1.1';
  /** Content-Length is added for a body unless headers set Content-Length or Transfer-Encoding, or this is false. */
  autoLength?: boolean;
}

/** The bytes of one request, exactly as specified. */
export function requestBytes(spec: RequestSpec): Buffer {
  const body = spec.body === undefined ? Buffer.alloc(0) : Buffer.isBuffer(spec.body) ? spec.body : Buffer.from(spec.body, 'utf8');
  const headers: Array<[string, string]> = [['Host', 'gateway.test']];
  for (const [k, v] of Object.entries(spec.headers ?? {})) headers.push([k, String(v)]);
  const framed = headers.some(([k]) => /^(content-length|transfer-encoding)$/i.test(k));
  if (!framed && spec.autoLength !== false && (body.length > 0 || (spec.method ?? 'POST') === 'POST')) headers.push(['Content-Length', String(body.length)]);
  const head = `${spec.method ?? 'POST'} ${spec.target} HTTP/${spec.version ?? '1.1'}\r\n${headers.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
  return Buffer.concat([Buffer.from(head, 'latin1'), body]);
}

/** Sends one request on its own connection and returns the final response. */
export async function send(baseUrl: string, spec: RequestSpec): Promise<RawResponse> {
  const result = await exchange(baseUrl, [requestBytes(spec)], { expect: 1 });
  const response = result.responses[0];
  if (!response) throw new Error(`no response to ${spec.method ?? 'POST'} ${spec.target} (closed=${result.closed}, timedOut=${result.timedOut})`);
  return response;
}

/** Chunked framing of `parts`, terminating chunk included. */
export function chunked(parts: Array<string | Buffer>): Buffer {
  const out: Buffer[] = [];
  for (const p of parts) {
    const b = Buffer.isBuffer(p) ? p : Buffer.from(p, 'utf8');
    if (b.length === 0) continue;
    out.push(Buffer.from(`${b.length.toString(16)}\r\n`, 'latin1'), b, Buffer.from('\r\n', 'latin1'));
  }
  out.push(Buffer.from('0\r\n\r\n', 'latin1'));
  return Buffer.concat(out);
}
