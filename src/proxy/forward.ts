import { validateHeaderName, validateHeaderValue, type IncomingMessage, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { parse as legacyParse } from 'node:url';
import { buildConnector, Pool, type Dispatcher } from 'undici';
import { SENSITIVE_HEADERS } from './headers.js';
import { sendError } from './responses.js';

/** Methods forwarded without a length when the client sent neither a body nor a framing header. */
const NO_DEFAULT_LENGTH: ReadonlySet<string> = new Set(['GET', 'HEAD', 'TRACE', 'CONNECT']);
/** A request target every step below leaves as it is: origin-form, no characters url.parse escapes, no `//`, no `http:/`. */
const PLAIN_TARGET = /^\/(?!\/)(?:[A-Za-z0-9\-._~!$&()*+,;=:@%]|\/(?!\/))*(?:\?[A-Za-z0-9\-._~!$&()*+,;=:@%/?]*)?$/;
const URL_IN_PATH = /https?:\//;
/** Responses up to this declared length are collected and answered in one write; others stream. */
const SMALL_RESPONSE = 64 * 1024;

/**
 * Forwards buffered requests to the upstream over a pool of kept-alive connections (undici).
 *
 * The upstream receives the request the gateway classified, and nothing the gateway did not
 * read: the parsed request headers (never the raw lines, so a repeated header the gateway read
 * once is not sent twice) minus hop-by-hop fields, X-Forwarded-For/-Port/-Proto/-Host appended,
 * the path joined onto the upstream's base path as http-proxy joined it, and exactly the body
 * bytes with their length. The client receives the upstream's status, message, end-to-end
 * headers and body; framing and Connection are this hop's own. undici's dispatcher replaced a
 * node:http client request per call: same-run CPU per forwarded request fell by ~30 %
 * (docs/design/001-undici-forwarding.md).
 */
/** What the forwarder tells about the upstream's health: each failed exchange, and each answer after failures. */
export interface UpstreamObserver {
  onFailure(failure: { message: string; reachedUpstream: boolean; method: string; path: string; requestId: string | undefined }): void;
  onAnswer(): void;
}

export class Forwarder {
  readonly #pool: Pool;
  readonly #observer: UpstreamObserver | undefined;
  readonly #hostname: string;
  /** url.parse(upstream).path, as http-proxy joined it with the request path. */
  readonly #basePath: string;
  /** What `#basePath` adds in front of a plain target (no trailing slash), or null when only urlJoin will do. */
  readonly #prefix: string | null;
  /** The Host header to send when the client sent none. */
  readonly #defaultHost: string;

  constructor(readonly upstream: string, observer?: UpstreamObserver) {
    this.#observer = observer;
    const target = legacyParse(upstream);
    const https = target.protocol === 'https:';
    if (!https && target.protocol !== 'http:') throw new Error(`upstream ${upstream}: only http: and https: URLs are supported`);
    this.#hostname = target.hostname ?? 'localhost';
    const defaultPort = https ? 443 : 80;
    const port = target.port ? Number(target.port) : defaultPort;
    this.#basePath = target.path ?? '';
    this.#prefix = /^(\/[^/?#]+)*\/*$/.test(this.#basePath) && !URL_IN_PATH.test(this.#basePath) ? this.#basePath.replace(/(?<!\/)\/+$/, '') : null;
    const bare = this.#hostname.includes(':') && !this.#hostname.startsWith('[') ? `[${this.#hostname}]` : this.#hostname;
    this.#defaultHost = port !== defaultPort ? `${bare}:${port}` : bare;
    const connect = buildConnector({});
    this.#pool = new Pool(`${target.protocol}//${bare}:${port}`, {
      connections: 512,
      // No gateway-imposed limit on how long a task runs upstream (as with node:http before).
      headersTimeout: 0,
      bodyTimeout: 0,
      // TLS: the upstream's own name (none for an IP address), whatever a request carries.
      connect: (options, callback) => connect({ ...options, servername: isIP(this.#hostname) ? undefined : this.#hostname }, callback),
    });
  }

  /**
   * Sends exactly `body` on: the length is fixed so the upstream reads the same bytes the
   * gateway classified (no chunked re-framing, no Expect handshake to replay).
   */
  forward(req: IncomingMessage, res: ServerResponse, body: Buffer, requestId?: string): void {
    const headers = req.headers;
    const method = req.method ?? 'GET';
    if (body.length > 0 || headers['content-length'] !== undefined || headers['transfer-encoding'] !== undefined || !NO_DEFAULT_LENGTH.has(method)) {
      headers['content-length'] = String(body.length);
    }
    addForwardedHeaders(req);

    const hopByHop = connectionListed(headers.connection);
    const flat: Array<string | string[]> = [];
    for (const name in headers) {
      const value = headers[name];
      if (value !== undefined && !HOP_BY_HOP.has(name) && (hopByHop === null || !hopByHop.has(name))) flat.push(name, value);
    }
    if (headers.host === undefined) flat.push('host', this.#defaultHost);

    const exchange = new Exchange(req, res, this.upstream, this.#observer, requestId);
    // A client that leaves before its answer is complete takes the upstream exchange with it.
    res.once('close', exchange.onClientClose);
    // A fixed servername: undici would take it from the client's Host header, and reconnect whenever that changes.
    const options = { path: this.#path(req.url ?? '/'), method, headers: flat as string[], body: body.length > 0 ? body : null, servername: this.#hostname };
    this.#pool.dispatch(options as Dispatcher.DispatchOptions, exchange);
  }

  close(): void {
    void this.#pool.destroy().catch(() => undefined);
  }

  /** The upstream path for a request target: the base path joined with url.parse(target).path, as http-proxy did. */
  #path(target: string): string {
    if (this.#prefix !== null && PLAIN_TARGET.test(target) && !URL_IN_PATH.test(target)) return this.#prefix + target;
    return urlJoin(this.#basePath, legacyParse(target).path ?? '');
  }
}

/**
 * One forwarded request's answer, as undici delivers it. A response with a declared length up
 * to SMALL_RESPONSE is collected and sent in one write; anything else streams, with the
 * client's backpressure passed back to the upstream connection.
 */
class Exchange implements Dispatcher.DispatchHandlers {
  #abort: ((err?: Error) => void) | null = null;
  /** Set once undici hands the request to a connection: from then on it may reach the upstream. */
  #sent = false;
  #cancelled = false;
  #done = false;
  #status = 0;
  #statusText = '';
  #headers: string[] = [];
  #chunks: Buffer[] | null = null;

  constructor(
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly upstream: string,
    readonly observer: UpstreamObserver | undefined,
    readonly requestId: string | undefined,
  ) {}

  readonly onClientClose = (): void => {
    if (!this.res.writableFinished) this.cancel();
  };

  cancel(): void {
    if (this.#cancelled) return;
    this.#cancelled = true;
    this.#abort?.(new Error('the exchange was cancelled'));
  }

  onConnect(abort: (err?: Error) => void): void {
    this.#abort = abort;
    this.#sent = true;
    if (this.#cancelled) abort(new Error('the exchange was cancelled'));
  }

  onHeaders(status: number, raw: Buffer[], resume: () => void, statusText: string): boolean {
    if (status < 200) return true; // informational: not passed on
    const res = this.res;
    if (res.headersSent || res.destroyed) {
      this.cancel();
      return false;
    }
    this.observer?.onAnswer();
    this.#status = status;
    // A reason phrase node would refuse to send is dropped; the status code stands.
    this.#statusText = INVALID_FIELD_CHAR.test(statusText) ? '' : statusText;
    const framing = endToEndHeaders(raw, this.#headers);
    if (this.requestId !== undefined) this.#headers.push('x-request-id', this.requestId);
    if (status === 204 || status === 304) {
      // Never a body, whatever the head declares (undici would wait for a declared length).
      this.#done = true;
      if (this.#writeHead()) res.end();
      if (framing !== NO_FRAMING) this.cancel();
      return true;
    }
    if (framing >= 0 && framing <= SMALL_RESPONSE) {
      this.#chunks = [];
      return true;
    }
    if (!this.#writeHead()) return false;
    res.on('drain', resume);
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.#done) return true;
    if (this.#chunks !== null) {
      this.#chunks.push(chunk);
      return true;
    }
    return this.res.write(chunk);
  }

  onComplete(): void {
    if (this.#done) return;
    this.#done = true;
    const chunks = this.#chunks;
    if (chunks === null) {
      this.res.end();
      return;
    }
    if (this.res.destroyed || !this.#writeHead()) return;
    if (chunks.length === 0) this.res.end();
    else this.res.end(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks));
  }

  onError(err: Error): void {
    const { req, res } = this;
    // The client is gone and took the upstream exchange with it: nobody to answer.
    if (this.#cancelled || req.socket.destroyed) return;
    // A response cut off by the upstream: cut the client's off too rather than leave it waiting.
    if (res.headersSent) {
      res.destroy();
      return;
    }
    this.observer?.onFailure({ message: err.message, reachedUpstream: this.#sent, method: req.method ?? 'GET', path: (req.url ?? '/').slice(0, 2048), requestId: this.requestId });
    // Once the request was handed to a connection, the upstream may have run it: say so, a retry is not harmless.
    const message = this.#sent
      ? `upstream ${this.upstream} failed before answering in full (${err.message}); the request reached it, so the task may have run there`
      : `upstream ${this.upstream} did not answer: ${err.message}`;
    sendError(res, 502, { code: 'UpstreamUnavailable', message }, this.requestId !== undefined ? { 'x-request-id': this.requestId } : undefined);
  }

  /** False when node refuses the upstream's head (a field it will not send): the client gets a 502 instead. */
  #writeHead(): boolean {
    try {
      // node marks a 204/304 bodiless before it validates the fields, which would strip the 502's body: check first.
      if (this.#status === 204 || this.#status === 304) for (let i = 0; i < this.#headers.length; i += 2) validateField(this.#headers[i]!, this.#headers[i + 1]!);
      this.res.writeHead(this.#status, this.#statusText || undefined, this.#headers);
      return true;
    } catch (err) {
      this.cancel();
      this.res.statusMessage = '';
      sendError(this.res, 502, { code: 'UpstreamUnavailable', message: `upstream ${this.upstream} sent a response head that cannot be passed on (${(err as Error).message}); the task may have run there` });
      return false;
    }
  }
}

function validateField(name: string, value: string): void {
  validateHeaderName(name);
  validateHeaderValue(name, value);
}

/** What node refuses in a header value or reason phrase. */
const INVALID_FIELD_CHAR = /[^\t\x20-\x7e\x80-\xff]/;
/** endToEndHeaders' answer for a head with neither Content-Length nor Transfer-Encoding. */
const NO_FRAMING = -2;
/** endToEndHeaders' answer for a chunked (or otherwise transfer-coded) head. */
const TRANSFER_CODED = -1;

/** Hop-by-hop fields of a response: the next hop's framing and connection are this server's own. */
const RESPONSE_HOP_BY_HOP: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade']);

/**
 * Copies the upstream's end-to-end response fields as flat [name, value, …] into `out`, names
 * as the upstream spelled them. Returns the declared Content-Length (the first one),
 * TRANSFER_CODED, or NO_FRAMING.
 */
function endToEndHeaders(raw: Buffer[], out: string[]): number {
  let length = NO_FRAMING;
  let listed: Set<string> | null = null;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toString('latin1');
    const lower = name.toLowerCase();
    const value = raw[i + 1]!.toString('latin1');
    if (lower === 'connection') listed = connectionListed(value) ?? listed;
    if (lower === 'transfer-encoding') length = TRANSFER_CODED;
    if (RESPONSE_HOP_BY_HOP.has(lower)) continue;
    if (lower === 'content-length') {
      if (length !== NO_FRAMING) continue;
      length = Number(value);
    }
    out.push(name, value);
  }
  // Rare: fields the upstream's Connection names, or a length next to a transfer coding (the coding wins; this hop re-frames).
  if (listed !== null || length === TRANSFER_CODED) {
    const drop = (lower: string): boolean => listed?.has(lower) === true || (length === TRANSFER_CODED && lower === 'content-length');
    const kept: string[] = [];
    for (let i = 0; i < out.length; i += 2) if (!drop(out[i]!.toLowerCase())) kept.push(out[i]!, out[i + 1]!);
    out.length = 0;
    out.push(...kept);
  }
  return length;
}

/** X-Forwarded-For/-Port/-Proto appended to what the client sent, X-Forwarded-Host kept or set. */
function addForwardedHeaders(req: IncomingMessage): void {
  const headers = req.headers;
  const socket = req.socket as IncomingMessage['socket'] & { encrypted?: boolean };
  const encrypted = socket.encrypted === true;
  const port = typeof headers.host === 'string' ? /:(\d+)/.exec(headers.host)?.[1] : undefined;
  append(headers, 'x-forwarded-for', socket.remoteAddress ?? '');
  append(headers, 'x-forwarded-port', port ?? (encrypted ? '443' : '80'));
  append(headers, 'x-forwarded-proto', encrypted ? 'https' : 'http');
  headers['x-forwarded-host'] = headers['x-forwarded-host'] || headers.host || '';
}

/** Hop-by-hop fields (RFC 9110 §7.6.1) meant for this hop only; the upstream connection's framing and keep-alive are the pool's. */
const HOP_BY_HOP: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'http2-settings', 'transfer-encoding', 'expect']);
/** Never dropped even when Connection names them: what the classification read, framing, routing, and what the gateway itself adds. */
const PROTECTED: ReadonlySet<string> = new Set([...SENSITIVE_HEADERS, 'host', 'connection', 'x-forwarded-for', 'x-forwarded-port', 'x-forwarded-proto', 'x-forwarded-host']);

/** Header names a client declared hop-by-hop in Connection (besides close/keep-alive), or null. */
function connectionListed(connection: string | undefined): Set<string> | null {
  if (connection === undefined || !connection.includes(',') && /^\s*(close|keep-alive)\s*$/i.test(connection)) return null;
  const names = new Set<string>();
  for (const part of connection.split(',')) {
    const name = part.trim().toLowerCase();
    if (name !== '' && name !== 'close' && name !== 'keep-alive' && !PROTECTED.has(name)) names.add(name);
  }
  return names.size > 0 ? names : null;
}

function append(headers: IncomingMessage['headers'], name: string, value: string): void {
  const before = headers[name];
  headers[name] = before ? `${before as string},${value}` : value;
}

/** http-proxy's common.urlJoin: slashes collapsed in the path, the query left alone. */
function urlJoin(base: string, path: string): string {
  const [first = '', ...query] = path.split('?');
  const joined = [base, first]
    .filter(Boolean)
    .join('/')
    .replace(/\/+/g, '/')
    .replace('http:/', 'http://')
    .replace('https:/', 'https://');
  return [joined, ...query].join('?');
}
