import { Agent as HttpAgent, request as httpRequest, type ClientRequest, type IncomingMessage, type OutgoingHttpHeaders, type RequestOptions, type ServerResponse } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { parse as legacyParse } from 'node:url';
import { sendError } from './responses.js';

/** Methods node:http sends without a length when nothing says otherwise (no chunking by default). */
const NO_DEFAULT_LENGTH: ReadonlySet<string> = new Set(['GET', 'HEAD', 'TRACE', 'CONNECT']);
/** A request target every step below leaves as it is: origin-form, no characters url.parse escapes, no `//`, no `http:/`. */
const PLAIN_TARGET = /^\/(?!\/)(?:[A-Za-z0-9\-._~!$&()*+,;=:@%]|\/(?!\/))*(?:\?[A-Za-z0-9\-._~!$&()*+,;=:@%/?]*)?$/;
const URL_IN_PATH = /https?:\//;
/** Responses up to this declared length are collected and answered in one write; longer ones are piped. */
const SMALL_RESPONSE = 64 * 1024;

/**
 * Forwards buffered requests to the upstream over kept-alive connections.
 *
 * One node:http(s) client request per call. It keeps what the gateway did when it forwarded
 * through http-proxy (`xfwd: true`, keep-alive agent), header for header and path for path:
 * the parsed request headers the gateway classified (never the raw lines, so a repeated
 * header the gateway read once is not sent twice), X-Forwarded-For/-Port/-Proto/-Host
 * appended, the upstream's base path joined the same way, the response's status, message and
 * headers passed back with the same Connection defaults. What it drops is http-proxy's
 * per-request machinery (options copy and URL re-parse, listener passes, per-header
 * setHeader calls), which cost more CPU than the whole gateway decision (bench/RESULTS.md).
 */
export class Forwarder {
  readonly agent: HttpAgent;
  readonly #request: (options: RequestOptions, onResponse: (res: IncomingMessage) => void) => ClientRequest;
  readonly #hostname: string;
  readonly #port: number;
  /** url.parse(upstream).path, as http-proxy joined it with the request path. */
  readonly #basePath: string;
  /** What `#basePath` adds in front of a plain target (no trailing slash), or null when only urlJoin will do. */
  readonly #prefix: string | null;
  /** The Host header node:http would send when the client sent none. */
  readonly #defaultHost: string;

  constructor(readonly upstream: string) {
    const target = legacyParse(upstream);
    const https = target.protocol === 'https:';
    if (!https && target.protocol !== 'http:') throw new Error(`upstream ${upstream}: only http: and https: URLs are supported`);
    const options = { keepAlive: true, maxSockets: 512, keepAliveMsecs: 1000 };
    this.agent = https ? new HttpsAgent(options) : new HttpAgent(options);
    this.#request = https ? httpsRequest : httpRequest;
    this.#hostname = target.hostname ?? 'localhost';
    const defaultPort = https ? 443 : 80;
    this.#port = target.port ? Number(target.port) : defaultPort;
    this.#basePath = target.path ?? '';
    this.#prefix = /^(\/[^/?#]+)*\/*$/.test(this.#basePath) && !URL_IN_PATH.test(this.#basePath) ? this.#basePath.replace(/\/+$/, '') : null;
    const bare = this.#hostname.includes(':') && !this.#hostname.startsWith('[') ? `[${this.#hostname}]` : this.#hostname;
    this.#defaultHost = this.#port !== defaultPort ? `${bare}:${this.#port}` : bare;
  }

  /**
   * Sends exactly `body` on: the length is fixed so the upstream reads the same bytes the
   * gateway classified (no chunked re-framing, no Expect handshake to replay).
   */
  forward(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
    const headers = req.headers;
    const method = req.method ?? 'GET';
    if (body.length > 0 || headers['content-length'] !== undefined || headers['transfer-encoding'] !== undefined || !NO_DEFAULT_LENGTH.has(method)) {
      headers['content-length'] = String(body.length);
    }
    delete headers['transfer-encoding'];
    delete headers['expect'];
    addForwardedHeaders(req);

    // Flat [name, value, …] headers: node:http stores them in one pass instead of a setHeader per field.
    const hopByHop = connectionListed(headers.connection);
    const flat: Array<string | string[]> = [];
    for (const name in headers) {
      const value = headers[name];
      if (value !== undefined && !HOP_BY_HOP.has(name) && (hopByHop === null || !hopByHop.has(name))) flat.push(name, value);
    }
    if (headers.host === undefined) flat.push('Host', this.#defaultHost);

    const upstreamReq = this.#request(
      { hostname: this.#hostname, port: this.#port, method, path: this.#path(req.url ?? '/'), headers: flat as unknown as OutgoingHttpHeaders, agent: this.agent },
      (upstreamRes) => respond(req, res, upstreamRes),
    );
    upstreamReq.on('error', (err: NodeJS.ErrnoException) => {
      // The client is gone and took the upstream exchange with it: nobody to answer.
      if (req.socket.destroyed && err.code === 'ECONNRESET') {
        upstreamReq.destroy();
        return;
      }
      sendError(res, 502, { code: 'UpstreamUnavailable', message: `upstream ${this.upstream} did not answer: ${err.message}` });
    });
    // The server destroys a request whose client left before its response was done: stop the upstream exchange too.
    req.once('error', () => upstreamReq.destroy());
    upstreamReq.end(body);
  }

  close(): void {
    this.agent.destroy();
  }

  /** The upstream path for a request target: the base path joined with url.parse(target).path, as http-proxy did. */
  #path(target: string): string {
    if (this.#prefix !== null && PLAIN_TARGET.test(target) && !URL_IN_PATH.test(target)) return this.#prefix + target;
    return urlJoin(this.#basePath, legacyParse(target).path ?? '');
  }
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

/** Hop-by-hop fields (RFC 9110 §7.6.1) meant for this hop only; Connection itself is kept for close/keep-alive. */
const HOP_BY_HOP: ReadonlySet<string> = new Set(['keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'http2-settings']);
/** Never dropped even when Connection names them: framing, routing, and what the gateway itself adds. */
const PROTECTED = new Set(['content-length', 'host', 'connection', 'x-forwarded-for', 'x-forwarded-port', 'x-forwarded-proto', 'x-forwarded-host']);

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

function respond(req: IncomingMessage, res: ServerResponse, upstreamRes: IncomingMessage): void {
  const headers = upstreamRes.headers;
  if (req.httpVersion === '1.0') {
    delete headers['transfer-encoding'];
    headers.connection = req.headers.connection || 'close';
  } else if (!headers.connection) {
    headers.connection = req.headers.connection || 'keep-alive';
  }
  // A response cut off by the upstream: cut the client's off too rather than leave it waiting.
  upstreamRes.on('error', () => res.destroy());
  if (res.headersSent || res.destroyed) {
    upstreamRes.resume();
    return;
  }
  res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.statusMessage || undefined, headers);
  const length = headers['content-length'];
  if (length !== undefined && Number(length) <= SMALL_RESPONSE) {
    // A small response with a declared length: collect it and send head and body in one write
    // (the same bytes as piping, without a pipe's listeners and extra writes).
    const chunks: Buffer[] = [];
    upstreamRes.on('data', (chunk: Buffer) => chunks.push(chunk));
    upstreamRes.on('end', () => res.end(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)));
    return;
  }
  upstreamRes.pipe(res);
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
