import { Agent, createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import { connect, createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import httpProxy from 'http-proxy';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Forwarder } from '../../src/proxy/forward.js';
import { sendError } from '../../src/proxy/responses.js';

/**
 * The Forwarder sends the upstream what forwarding through http-proxy (xfwd, keep-alive
 * agent, the buffered body replayed) sent, and passes back what it passed back: the same
 * request line, end-to-end header lines, body, and the same response status, end-to-end
 * headers and body. Hop-by-hop fields are each hop's own and differ on purpose: the gateway
 * keeps its upstream connections alive whatever the client asked of its own connection, and
 * frames its answer itself (http-proxy passed the client's Connection on, and the upstream's
 * Connection/Keep-Alive/Transfer-Encoding back).
 */

interface Seen {
  method: string;
  url: string;
  /** [name, value] lines, sorted: http-proxy copied headers with util._extend, which reverses their order (order between different names carries no meaning). */
  headers: string[];
  body: string;
}

/** Fields that belong to one connection, not to the message. */
const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding']);

function lines(rawHeaders: string[], withHop = true): string[] {
  const out: string[] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase();
    if (withHop || !HOP.has(name)) out.push(`${name}: ${rawHeaders[i + 1]}`);
  }
  return out.sort();
}

/** A raw response as status line, end-to-end header lines (lower-cased names) and de-chunked body. */
function message(raw: string): { status: string; headers: string[]; body: string } {
  const end = raw.indexOf('\r\n\r\n');
  if (end === -1) return { status: raw, headers: [], body: '' };
  const [status = '', ...fields] = raw.slice(0, end).split('\r\n');
  const flat = fields.flatMap((f) => [f.slice(0, f.indexOf(':')), f.slice(f.indexOf(':') + 1).trim()]);
  let body = raw.slice(end + 4);
  if (/^transfer-encoding: chunked$/im.test(raw.slice(0, end))) {
    let out = '';
    for (let at = 0; ; ) {
      const eol = body.indexOf('\r\n', at);
      const size = parseInt(body.slice(at, eol), 16);
      if (!(size > 0)) break;
      out += body.slice(eol + 2, eol + 2 + size);
      at = eol + 2 + size + 2;
    }
    body = out;
  }
  return { status, headers: lines(flat, false), body };
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
    // A bodiless request other than POST/PUT/PATCH goes on without "content-length: 0" (undici
    // leaves it out, http-proxy sent it): the same message, as neither length nor chunking means no body.
    const payload = req.method === 'POST' || req.method === 'PUT' || req.method === 'PATCH';
    const headers = lines(req.rawHeaders, false).filter((l) => payload || l !== 'content-length: 0');
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers, body: Buffer.concat(chunks).toString('latin1') });
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
        expect(message(r.mine.res), pair.name).toEqual(message(r.ref.res));
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

describe('connections and streaming', () => {
  async function through(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ port: number; connections: () => number; close: () => void }> {
    const upstream = createServer(handler);
    let connections = 0;
    upstream.on('connection', () => connections++);
    const forwarder = new Forwarder(`http://127.0.0.1:${await listen(upstream)}`);
    const gateway = front(forwarder);
    const port = await listen(gateway);
    return {
      port,
      connections: () => connections,
      close: () => {
        forwarder.close();
        gateway.close();
        upstream.closeAllConnections();
        upstream.close();
      },
    };
  }

  it('a client closing its own connection does not close the upstream one: one upstream connection for several clients', async () => {
    const t = await through((req, res) => {
      req.resume();
      req.on('end', () => res.end('ok'));
    });
    try {
      for (let i = 0; i < 3; i++) {
        const out = await raw(t.port, 'POST /adminapi/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}');
        expect(out).toMatch(/^HTTP\/1.1 200 /);
        expect(out).toMatch(/\r\nconnection: close\r\n/i);
      }
      expect(t.connections()).toBe(1);
    } finally {
      t.close();
    }
  });

  it("the upstream's hop-by-hop fields, and those its Connection names, are not passed back", async () => {
    const t = await through((req, res) => {
      req.resume();
      res.writeHead(200, ['Connection', 'keep-alive, X-Up-Secret', 'Keep-Alive', 'timeout=99', 'X-Up-Secret', 's', 'X-Kept', '1', 'Content-Length', '2']);
      res.end('ok');
    });
    try {
      const out = await raw(t.port, 'GET /x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n');
      const m = message(out);
      expect(m.headers).toContain('x-kept: 1');
      expect(m.headers.join('\n')).not.toMatch(/x-up-secret/);
      expect(out).not.toMatch(/timeout=99/);
      expect(m.body).toBe('ok');
    } finally {
      t.close();
    }
  });

  it('informational responses are not passed on; the final one is', async () => {
    const t = await through((req, res) => {
      req.resume();
      res.writeEarlyHints({ link: '</a.css>; rel=preload' }, () => res.end('final'));
    });
    try {
      const out = await raw(t.port, 'GET /x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n');
      expect(out).toMatch(/^HTTP\/1.1 200 /);
      expect(message(out).body).toBe('final');
    } finally {
      t.close();
    }
  });

  for (const declared of [true, false]) {
    it(`a large response (${declared ? 'declared length' : 'chunked'}) streams through whole to a slow reader`, async () => {
      const big = Buffer.alloc(8 * 1024 * 1024);
      for (let i = 0; i < big.length; i++) big[i] = (i * 7 + (i >> 13)) & 0xff;
      const t = await through((req, res) => {
        req.resume();
        res.writeHead(200, declared ? { 'content-length': String(big.length) } : {});
        res.end(big);
      });
      try {
        const body = await new Promise<Buffer>((resolve, reject) => {
          const socket = connect(t.port, '127.0.0.1', () => socket.write('GET /big HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n'));
          const chunks: Buffer[] = [];
          socket.on('data', (c: Buffer) => {
            chunks.push(c);
            socket.pause();
            setTimeout(() => socket.resume(), 1); // a slow reader: the gateway must not buffer without bound
          });
          socket.on('end', () => resolve(Buffer.concat(chunks)));
          socket.on('error', reject);
        });
        const text = body.toString('latin1');
        const m = message(text);
        expect(m.status).toMatch(/^HTTP\/1.1 200 /);
        expect(Buffer.from(m.body, 'latin1').equals(big)).toBe(true);
      } finally {
        t.close();
      }
    });
  }

  it("a client that does not read holds the upstream back (backpressure): the gateway does not buffer the upstream's response", async () => {
    let accepted = 0;
    const chunk = Buffer.alloc(1024 * 1024, 0x62);
    const t = await through((req, res) => {
      req.resume();
      res.writeHead(200);
      const pump = (): void => {
        while (res.write(chunk, (err) => (err ? undefined : (accepted += chunk.length)))) {
          /* keep writing while the socket takes it */
        }
        res.once('drain', pump);
      };
      pump();
    });
    try {
      const socket = connect(t.port, '127.0.0.1', () => socket.write('GET /endless HTTP/1.1\r\nHost: gw.test\r\n\r\n'));
      socket.on('error', () => undefined);
      socket.pause(); // never reads
      await new Promise((r) => setTimeout(r, 1_500));
      socket.destroy();
      // Socket buffers on both hops hold a few MiB; without backpressure the upstream would push hundreds.
      expect(accepted).toBeGreaterThan(0);
      expect(accepted).toBeLessThan(48 * 1024 * 1024);
    } finally {
      t.close();
    }
  });

  for (const status of [204, 304]) {
    it(`a ${status} that declares a length is answered at once (no body follows a ${status})`, async () => {
      const t = await through((req, res) => {
        req.resume();
        res.writeHead(status, { etag: '"v1"', 'content-length': '10' });
        res.end();
      });
      try {
        const started = Date.now();
        const out = await raw(t.port, 'GET /x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n');
        expect(out).toMatch(new RegExp(`^HTTP/1.1 ${status} `));
        expect(out).toMatch(/\r\netag: "v1"\r\n/i);
        expect(Date.now() - started).toBeLessThan(1_500);
      } finally {
        t.close();
      }
    });
  }

  /** An upstream speaking raw bytes: answers every request head with `answer`. */
  async function rawUpstream(answer: string): Promise<{ url: string; close: () => void }> {
    const sockets = new Set<Socket>();
    const server = createNetServer((socket) => {
      sockets.add(socket);
      let seen = '';
      socket.on('data', (d: Buffer) => {
        seen += d.toString('latin1');
        if (seen.includes('\r\n\r\n')) {
          seen = '';
          socket.write(answer, 'latin1');
        }
      });
      socket.on('error', () => undefined);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      close: () => {
        for (const s of sockets) s.destroy();
        server.close();
      },
    };
  }

  async function viaRaw(answer: string): Promise<string> {
    const up = await rawUpstream(answer);
    const forwarder = new Forwarder(up.url);
    const gateway = front(forwarder);
    try {
      return await raw(await listen(gateway), 'GET /x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n');
    } finally {
      forwarder.close();
      gateway.close();
      up.close();
    }
  }

  it('a reason phrase node would not send is dropped; status and body pass', async () => {
    const out = await viaRaw('HTTP/1.1 200 O\x01K\r\nContent-Length: 2\r\n\r\nok');
    expect(out).toMatch(/^HTTP\/1.1 200 OK\r\n/);
    expect(message(out).body).toBe('ok');
  });

  it('a header field node would not send: 502 saying the task may have run, never a hang', async () => {
    const out = await viaRaw('HTTP/1.1 200 OK\r\nX-Bad: a\x01b\r\nContent-Length: 2\r\n\r\nok');
    // undici may refuse the field itself; either way the client hears of it at once.
    expect(out).toMatch(/^HTTP\/1.1 502 /);
    expect(out).toMatch(/may have run/);
  });

  it('a 204 whose head node will not send: a 502 with its whole body', async () => {
    const out = await viaRaw('HTTP/1.1 204 No Content\r\nX Bad: 1\r\n\r\n');
    expect(out).toMatch(/^HTTP\/1.1 502 /);
    const m = message(out);
    const length = Number(/content-length: (\d+)/i.exec(out)?.[1]);
    expect(Buffer.byteLength(m.body, 'latin1')).toBe(length);
    expect(m.body).toMatch(/may have run/);
  });

  it('an unsolicited 100 Continue (undici refuses it): 502 saying the request reached the upstream and may have run', async () => {
    const out = await viaRaw('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    expect(out).toMatch(/^HTTP\/1.1 502 /);
    expect(out).toMatch(/the request reached it, so the task may have run there/);
  });

  for (const host of ['localhost', '127.0.0.1']) {
    it(`https upstream at ${host}: the TLS server name is the upstream's (${host === 'localhost' ? 'localhost' : 'none for an IP'}), never the client's Host, and its certificate is verified`, async () => {
      const names: string[] = [];
      const tlsUpstream = createHttpsServer(
        {
          key: readFileSync(new URL('../fixtures/localhost-key.pem', import.meta.url)),
          cert: readFileSync(new URL('../fixtures/localhost-cert.pem', import.meta.url)),
          SNICallback: (name, cb) => {
            names.push(name);
            cb(null);
          },
        },
        (_req, res) => res.end('reached'),
      );
      let attempts = 0;
      tlsUpstream.on('connection', () => attempts++);
      tlsUpstream.on('tlsClientError', () => undefined);
      await new Promise<void>((r) => tlsUpstream.listen(0, '127.0.0.1', r));
      const forwarder = new Forwarder(`https://${host}:${(tlsUpstream.address() as AddressInfo).port}`);
      const gateway = front(forwarder);
      try {
        const out = await raw(await listen(gateway), 'GET /x HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n');
        // The fixture certificate is self-signed: a verifying client refuses it.
        expect(out).toMatch(/^HTTP\/1.1 502 /);
        expect(out).not.toMatch(/reached/);
        expect(out).toMatch(/certificate/i);
        expect(attempts).toBeGreaterThan(0);
        expect(names).toEqual(host === 'localhost' ? ['localhost'] : []);
      } finally {
        forwarder.close();
        gateway.close();
        tlsUpstream.close();
      }
    });
  }

  it('an upstream that cuts its response off: the client connection is cut off too, not left waiting', async () => {
    const t = await through((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-length': String(1024 * 1024) });
      res.write(Buffer.alloc(100_000, 0x61), () => res.socket?.destroy());
    });
    try {
      const started = Date.now();
      const out = await raw(t.port, 'GET /x HTTP/1.1\r\nHost: gw.test\r\n\r\n');
      expect(out).toMatch(/^HTTP\/1.1 200 /);
      expect(out.length).toBeLessThan(1024 * 1024);
      expect(Date.now() - started).toBeLessThan(1_500); // raw() gives up after 2 s
    } finally {
      t.close();
    }
  });

  it('a client that leaves before the answer: the upstream request is aborted', async () => {
    let upstreamClosed!: () => void;
    const closed = new Promise<void>((r) => (upstreamClosed = r));
    const t = await through((req) => {
      req.resume();
      req.socket.on('close', upstreamClosed); // never answers
    });
    try {
      const socket = connect(t.port, '127.0.0.1', () => socket.write('POST /adminapi/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 2\r\n\r\n{}'));
      socket.on('error', () => undefined);
      await new Promise((r) => setTimeout(r, 100));
      socket.destroy();
      await Promise.race([closed, new Promise((_, reject) => setTimeout(() => reject(new Error('upstream request still open 2 s after the client left')), 2_000))]);
    } finally {
      t.close();
    }
  });
});
