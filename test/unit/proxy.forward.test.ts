import { Agent, createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import httpProxy from 'http-proxy';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Forwarder } from '../../src/proxy/forward.js';
import { sendError } from '../../src/proxy/responses.js';

/**
 * The Forwarder sends the upstream what forwarding through http-proxy (xfwd, keep-alive
 * agent, the buffered body replayed) sent, and passes back what it passed back: the same
 * request line, header lines in the same order, body, and the same response bytes.
 */

interface Seen {
  method: string;
  url: string;
  /** [name, value] lines, sorted: http-proxy copied headers with util._extend, which reverses their order (order between different names carries no meaning). */
  headers: string[];
  body: string;
}

function lines(rawHeaders: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) out.push(`${rawHeaders[i]!.toLowerCase()}: ${rawHeaders[i + 1]}`);
  return out.sort();
}

/** The old forwarder, kept here as the reference. */
function referenceForward(upstream: string) {
  const agent = new Agent({ keepAlive: true, maxSockets: 512, keepAliveMsecs: 1000 });
  const proxy = httpProxy.createProxyServer({ target: upstream, agent, xfwd: true });
  proxy.on('error', (err, _req, res) => {
    if ('writeHead' in res) sendError(res as ServerResponse, 502, { code: 'UpstreamUnavailable', message: `upstream ${upstream} did not answer: ${err.message}` });
    else res.destroy();
  });
  return {
    forward(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
      const headers = req.headers;
      if (body.length > 0 || headers['content-length'] !== undefined || headers['transfer-encoding'] !== undefined) headers['content-length'] = String(body.length);
      delete headers['transfer-encoding'];
      delete headers['expect'];
      const replay = { pipe: (dest: NodeJS.WritableStream) => dest.end(body) };
      proxy.web(req, res, { buffer: replay as unknown as httpProxy.ServerOptions['buffer'] });
    },
    close(): void {
      proxy.close();
      agent.destroy();
    },
  };
}

function front(forwarder: { forward(req: IncomingMessage, res: ServerResponse, body: Buffer): void }): Server {
  return createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => forwarder.forward(req, res, Buffer.concat(chunks)));
  });
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as AddressInfo).port;
}

/** Sends raw bytes, returns the raw response (until the server closes, or a chunked body's last chunk), Date lines removed. */
function raw(port: number, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let out = '';
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      out += d;
      if (/transfer-encoding: chunked/i.test(out) && out.endsWith('\r\n0\r\n\r\n')) socket.destroy();
    });
    socket.on('close', () => resolve(out.replace(/^date: .*\r\n/gim, '')));
    socket.on('error', reject);
    socket.write(bytes);
    setTimeout(() => socket.destroy(), 2_000);
  });
}

let seen: Seen[] = [];
const upstream = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: lines(req.rawHeaders), body: Buffer.concat(chunks).toString('latin1') });
    if (req.url?.includes('chunked')) {
      res.writeHead(200, { 'content-type': 'text/plain', 'set-cookie': ['a=1', 'b=2'] });
      res.write('part one, ');
      setTimeout(() => res.end('part two'), 5);
      return;
    }
    res.writeHead(201, 'Made Here', { 'content-type': 'application/json', 'x-upstream': 'yes', 'set-cookie': ['a=1', 'b=2'] });
    res.end(JSON.stringify({ ok: true, url: req.url }));
  });
});

const closers: Array<() => void> = [];
let pairs: Array<{ name: string; mine: number; ref: number }> = [];

beforeAll(async () => {
  const up = await listen(upstream);
  for (const [name, base] of [['root', `http://127.0.0.1:${up}`], ['base path', `http://127.0.0.1:${up}/base/`]] as const) {
    const mine = new Forwarder(base);
    const ref = referenceForward(base);
    const a = front(mine);
    const b = front(ref);
    pairs.push({ name, mine: await listen(a), ref: await listen(b) });
    closers.push(() => {
      mine.close();
      ref.close();
      a.close();
      b.close();
    });
  }
});

afterAll(() => {
  for (const c of closers) c();
  upstream.close();
});

async function both(port: { mine: number; ref: number }, bytes: string): Promise<{ mine: { res: string; up: Seen[] }; ref: { res: string; up: Seen[] } }> {
  seen = [];
  const mineRes = await raw(port.mine, bytes);
  const mineUp = seen;
  seen = [];
  const refRes = await raw(port.ref, bytes);
  const refUp = seen;
  return { mine: { res: mineRes, up: mineUp }, ref: { res: refRes, up: refUp } };
}

const BODY = '{"CmdletInput":{"CmdletName":"Get-Mailbox","Parameters":{"Identity":"a@contoso.com"}}}';
const CASES: Array<[string, string]> = [
  ['POST with a JSON body', `POST /adminapi/beta/t/InvokeCommand HTTP/1.1\r\nHost: gw.test:8080\r\nContent-Type: application/json\r\nAuthorization: Bearer abc\r\nContent-Length: ${BODY.length}\r\nConnection: close\r\n\r\n${BODY}`],
  ['absolute-form target', `POST http://gw.test/adminapi/beta/t/InvokeCommand?x=1 HTTP/1.1\r\nHost: gw.test\r\nContent-Length: ${BODY.length}\r\nConnection: close\r\n\r\n${BODY}`],
  ['repeated slashes', `POST //adminapi//beta/t///InvokeCommand HTTP/1.1\r\nHost: gw.test\r\nContent-Length: ${BODY.length}\r\nConnection: close\r\n\r\n${BODY}`],
  ['query with ? and /', 'GET /a/b?c=d?e/f&g=%20 HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n'],
  ['fragment', 'GET /a/b#frag HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n'],
  ['http:/ inside the path', 'GET /go/http:/evil.test/x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n'],
  ['quote and backslash characters', "GET /a'b/c\\d HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n"],
  ['HTTP/1.0 without Host', 'GET /adminapi/x HTTP/1.0\r\n\r\n'],
  ['DELETE without a body', 'DELETE /adminapi/x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n'],
  ['POST without a body', 'POST /adminapi/x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n'],
  ['chunked request body', `POST /adminapi/x HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n`],
  ['existing X-Forwarded-* and repeated headers', 'GET /x HTTP/1.1\r\nHost: gw.test:9\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\nX-Forwarded-Host: outer.test\r\nX-Custom: 1\r\nX-Custom: 2\r\nAuthorization: Bearer first\r\nAuthorization: Bearer second\r\nConnection: close\r\n\r\n'],
  ['keep-alive client, upstream answers chunked', 'GET /chunked HTTP/1.1\r\nHost: gw.test\r\n\r\n'],
  ['HEAD', 'HEAD /x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n'],
];

describe('Forwarder matches forwarding through http-proxy', () => {
  for (const [label, bytes] of CASES) {
    it(label, async () => {
      for (const pair of pairs) {
        const r = await both(pair, bytes);
        expect(r.mine.up, pair.name).toEqual(r.ref.up);
        expect(r.mine.res, pair.name).toEqual(r.ref.res);
      }
    });
  }

  it('request targets: the upstream sees the same path (fuzzed)', async () => {
    const alphabet = ['a', 'Z', '0', '/', '//', '?', '#', '%', '%2F', '.', '..', ';', ':', '@', '!', '$', '&', "'", '(', '*', '+', ',', '=', '~', '-', '_', 'http:/', 'https:/', '\\', '|', '^', '`', '{', '"', '<'];
    let seed = 42;
    const rnd = (n: number): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    for (let i = 0; i < 150; i++) {
      let target = '/';
      const len = 1 + rnd(8);
      for (let j = 0; j < len; j++) target += alphabet[rnd(alphabet.length)];
      for (const pair of pairs) {
        const r = await both(pair, `GET ${target} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n`);
        expect(r.mine.up.map((s) => s.url), `${pair.name} ${target}`).toEqual(r.ref.up.map((s) => s.url));
        expect(r.mine.res.split('\r\n')[0], `${pair.name} ${target}`).toEqual(r.ref.res.split('\r\n')[0]);
      }
    }
  });

  it('an upstream that does not answer: 502 with the same body', async () => {
    const dead = createServer();
    const port = await listen(dead);
    await new Promise<void>((r) => dead.close(() => r()));
    const mine = new Forwarder(`http://127.0.0.1:${port}`);
    const ref = referenceForward(`http://127.0.0.1:${port}`);
    const a = front(mine);
    const b = front(ref);
    try {
      const req = `POST /adminapi/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`;
      const [x, y] = [await raw(await listen(a), req), await raw(await listen(b), req)];
      expect(x).toMatch(/^HTTP\/1.1 502 /);
      expect(x).toEqual(y);
    } finally {
      mine.close();
      ref.close();
      a.close();
      b.close();
    }
  });
});

describe('hop-by-hop fields', () => {
  it('are not passed on: the fixed set, and whatever the client named in Connection (framing and X-Forwarded-* excepted)', async () => {
    const seen: string[][] = [];
    const upstream = createServer((req, res) => {
      seen.push(lines(req.rawHeaders));
      req.resume();
      req.on('end', () => res.end('ok'));
    });
    const upstreamPort = await listen(upstream);
    const forwarder = new Forwarder(`http://127.0.0.1:${upstreamPort}`);
    const gateway = front(forwarder);
    const port = await listen(gateway);
    try {
      const raw =
        'POST /adminapi/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 2\r\n' +
        'Connection: close, X-Secret, content-length, x-forwarded-for\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic eA==\r\nTE: trailers\r\nTrailer: X-T\r\nX-Kept: 1\r\n\r\n{}';
      await new Promise<void>((resolve, reject) => {
        const socket = connect(port, '127.0.0.1', () => socket.end(raw));
        socket.on('data', () => undefined);
        socket.on('close', () => resolve());
        socket.on('error', reject);
      });
      const names = seen[0]!.map((l) => l.split(':')[0]);
      expect(names).toContain('x-kept');
      expect(names).toContain('content-length');
      expect(names).toContain('x-forwarded-for');
      for (const dropped of ['x-secret', 'keep-alive', 'proxy-authorization', 'te', 'trailer']) expect(names, dropped).not.toContain(dropped);
    } finally {
      gateway.close();
      upstream.close();
      forwarder.close();
    }
  });
});
