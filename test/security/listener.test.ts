import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { chunked, exchange, requestBytes, send } from './raw.js';
import { INVOKE, invokeBody, startStack, type Stack } from './stack.js';

/** HTTP framing and slow clients: the gateway and the upstream must agree on where each request is. */

const HEADERS_TIMEOUT_MS = 400;
const REQUEST_TIMEOUT_MS = 1_200;
const LIMIT = 1024 * 1024;

let s: Stack;
beforeAll(async () => {
  // Production defaults are 10 s / 30 s; the mechanism is the same, only shorter.
  process.env['PAMGATE_HEADERS_TIMEOUT_MS'] = String(HEADERS_TIMEOUT_MS);
  process.env['PAMGATE_REQUEST_TIMEOUT_MS'] = String(REQUEST_TIMEOUT_MS);
  s = await startStack();
});
afterAll(async () => {
  delete process.env['PAMGATE_HEADERS_TIMEOUT_MS'];
  delete process.env['PAMGATE_REQUEST_TIMEOUT_MS'];
  await s?.stop();
});
beforeEach(() => s.upstream.reset());

const GATED = invokeBody('New-JournalRule');
const UNGATED = invokeBody('Get-Mailbox');
const head = (lines: string[]) => `POST ${INVOKE} HTTP/1.1\r\nHost: gw\r\n${lines.map((l) => `${l}\r\n`).join('')}\r\n`;

describe('body limit while streaming', () => {
  it('a declared Content-Length over the limit is refused before any body is sent', async () => {
    const r = await exchange(s.proxy, head([`Authorization: ${s.auth.eve}`, `Content-Length: ${LIMIT + 1}`]));
    expect(r.responses.map((x) => x.status)).toEqual([413]);
    await s.expectNothingGated();
  });

  it('a chunked body (no Content-Length) is cut off at the limit', async () => {
    const padding = 'x'.repeat(LIMIT);
    const body = chunked([GATED.slice(0, -2), `,"Pad":"`, padding.slice(0, LIMIT / 2), padding.slice(LIMIT / 2), '"}}']);
    const r = await exchange(s.proxy, [head([`Authorization: ${s.auth.eve}`, 'Transfer-Encoding: chunked']), body]);
    expect(r.responses.map((x) => x.status)).toEqual([413]);
    await s.expectNothingGated();
  });

  it('a chunked body within the limit is classified like any other', async () => {
    const r = await exchange(s.proxy, [head([`Authorization: ${s.auth.eve}`, 'Transfer-Encoding: chunked']), chunked([GATED.slice(0, 7), GATED.slice(7, 30), GATED.slice(30)])]);
    expect(r.responses.map((x) => x.status)).toEqual([403]);
    const ok = await exchange(s.proxy, [head(['Transfer-Encoding: chunked']), chunked([UNGATED.slice(0, 9), UNGATED.slice(9)])]);
    expect(ok.responses.map((x) => x.status)).toEqual([200]);
    expect((await s.upstream.executed()).map((e) => e.cmdlet)).toEqual(['Get-Mailbox']);
  });
});

describe('slow clients', () => {
  it('slowloris: a client that never finishes its headers is cut off (headersTimeout)', async () => {
    const started = Date.now();
    const drip = Array.from({ length: 40 }, (_, i) => [`X-Drip-${i}: 1\r\n`, { waitMs: 100 }]).flat();
    const r = await exchange(s.proxy, [`POST ${INVOKE} HTTP/1.1\r\nHost: gw\r\n`, ...drip], { timeoutMs: 6_000 });
    const elapsed = Date.now() - started;
    expect(r.closed).toBe(true);
    expect(elapsed).toBeLessThan(HEADERS_TIMEOUT_MS + 2_000);
    expect(r.responses.map((x) => x.status)).toEqual([408]);
  });

  it('a body dripped a byte at a time is cut off (requestTimeout)', async () => {
    const started = Date.now();
    const drip = Array.from({ length: 40 }, () => ['x', { waitMs: 100 }]).flat();
    const r = await exchange(s.proxy, [head([`Authorization: ${s.auth.eve}`, 'Content-Length: 100']), ...drip], { timeoutMs: 6_000 });
    expect(r.closed).toBe(true);
    expect(Date.now() - started).toBeLessThan(REQUEST_TIMEOUT_MS + 2_000);
    expect(r.responses.map((x) => x.status)).toEqual([408]);
    await s.expectNothingGated();
  });
});

describe('header limits', () => {
  it('a header block over 16 KiB is refused (431), on the command route on record', async () => {
    const r = await send(s.proxy, { target: INVOKE, headers: { Authorization: s.auth.eve!, 'X-Big': 'a'.repeat(17 * 1024) }, body: GATED });
    expect(r.status).toBe(431);
    expect(JSON.parse(r.body).error.code).toBe('RequestHeaderFieldsTooLarge');
    expect((await s.auditEvents()).at(-1)).toMatchObject({ type: 'task.blocked', actor: null, path: INVOKE, reason: 'the request head is over the size limit (HPE_HEADER_OVERFLOW)' });
    await s.expectNothingGated();
    const before = (await s.auditEvents()).length;
    expect((await send(s.proxy, { target: '/adminapi/beta/contoso/Mailbox', headers: { 'X-Big': 'a'.repeat(17 * 1024) } })).status).toBe(431);
    expect(await s.auditEvents()).toHaveLength(before);
  });

  it('more than 100 header fields are refused (431), not silently truncated', async () => {
    const many: Record<string, string> = { Authorization: s.auth.eve! };
    for (let i = 0; i < 120; i++) many[`X-H${i}`] = '1';
    // Past the 100th field Node would drop headers, e.g. a Content-Encoding the upstream still sees.
    many['Content-Encoding'] = 'gzip';
    const r = await send(s.proxy, { target: INVOKE, headers: many, body: UNGATED });
    expect(r.status).toBe(431);
    expect(await s.upstream.executed()).toEqual([]);
    // On the command route the refusal is on record (the body was never read: it may hold a gated task).
    expect((await s.auditEvents()).at(-1)).toMatchObject({ type: 'task.blocked', actor: null, reason: 'more than 100 header fields', path: INVOKE });
    // Elsewhere it is not.
    const before = (await s.auditEvents()).length;
    expect((await send(s.proxy, { target: '/healthz-of-upstream', headers: many })).status).toBe(431);
    expect(await s.auditEvents()).toHaveLength(before);
  });
});

describe('protocol versions, pipelining and framing', () => {
  it('HTTP/1.0', async () => {
    expect((await send(s.proxy, { target: INVOKE, version: '1.0', headers: { Authorization: s.auth.eve! }, body: GATED })).status).toBe(403);
    expect((await send(s.proxy, { target: INVOKE, version: '1.0', headers: {}, body: UNGATED })).status).toBe(200);
    // Without Content-Length an HTTP/1.0 request has no body; the bytes that follow are not a request.
    const r = await exchange(s.proxy, [requestBytes({ target: INVOKE, version: '1.0', headers: { Authorization: s.auth.eve! }, body: GATED, autoLength: false })], { expect: 2, timeoutMs: 3_000 });
    expect(r.responses.length).toBeGreaterThan(0);
    expect(r.responses.every((x) => x.status === 400)).toBe(true);
    await s.expectNothingGated();
  });

  it('pipelined requests are each classified', async () => {
    const bytes = Buffer.concat([
      requestBytes({ target: INVOKE, body: UNGATED }),
      requestBytes({ target: INVOKE, headers: { Authorization: s.auth.eve! }, body: GATED }),
      requestBytes({ target: INVOKE, body: UNGATED }),
    ]);
    const r = await exchange(s.proxy, bytes, { expect: 3 });
    expect(r.responses.map((x) => x.status)).toEqual([200, 403, 200]);
    expect((await s.upstream.executed()).map((e) => e.cmdlet)).toEqual(['Get-Mailbox', 'Get-Mailbox']);
  });

  it('a short Content-Length cannot smuggle a second request past classification', async () => {
    const smuggled = requestBytes({ target: INVOKE, headers: { Authorization: s.auth.eve! }, body: GATED }).toString('latin1');
    const outer = `${UNGATED}${smuggled}`;
    const bytes = head([`Content-Length: ${UNGATED.length}`]) + outer;
    const r = await exchange(s.proxy, bytes, { expect: 2 });
    expect(r.responses.map((x) => x.status)).toEqual([200, 403]);
    await s.expectNothingGated();
  });

  it('Expect: 100-continue', async () => {
    const r = await exchange(s.proxy, [head([`Authorization: ${s.auth.eve}`, 'Expect: 100-continue', `Content-Length: ${GATED.length}`]), { waitFor: 1 }, GATED]);
    expect(r.interim.map((x) => x.status)).toEqual([100]);
    expect(r.responses.map((x) => x.status)).toEqual([403]);
    const big = await exchange(s.proxy, head([`Authorization: ${s.auth.eve}`, 'Expect: 100-continue', `Content-Length: ${LIMIT + 1}`]));
    expect(big.interim).toEqual([]); // refused before the client sends a byte of body
    expect(big.responses.map((x) => x.status)).toEqual([413]);
    const odd = await exchange(s.proxy, [head([`Authorization: ${s.auth.eve}`, 'Expect: 200-ok', `Content-Length: ${GATED.length}`]), GATED]);
    expect(odd.responses[0]?.status).toBe(417);
    await s.expectNothingGated();
  });

  it('Content-Length and Transfer-Encoding conflicts are refused', async () => {
    const gated = chunked([GATED]).toString('latin1');
    const cases = [
      head([`Authorization: ${s.auth.eve}`, `Content-Length: ${gated.length}`, 'Transfer-Encoding: chunked']) + gated,
      head([`Authorization: ${s.auth.eve}`, 'Transfer-Encoding: chunked', `Content-Length: 5`]) + gated,
      head([`Authorization: ${s.auth.eve}`, `Content-Length: ${GATED.length}`, `Content-Length: ${GATED.length + 1}`]) + GATED + ' ',
      head([`Authorization: ${s.auth.eve}`, 'Transfer-Encoding: gzip, chunked']) + gated,
      head([`Authorization: ${s.auth.eve}`, 'Transfer-Encoding: chunked', 'Transfer-Encoding: chunked']) + gated,
      head([`Authorization: ${s.auth.eve}`, 'Transfer-Encoding: xchunked']) + gated,
      head([`Authorization: ${s.auth.eve}`, 'Transfer-Encoding:\r\n chunked']) + gated,
      head([`Authorization: ${s.auth.eve}`, `Content-Length: +${GATED.length}`]) + GATED,
      head([`Authorization: ${s.auth.eve}`, `Content-Length : ${GATED.length}`]) + GATED,
    ];
    for (const bytes of cases) {
      const before = (await s.auditEvents()).length;
      const r = await exchange(s.proxy, bytes, { timeoutMs: 3_000 });
      const label = bytes.split('\r\n').slice(2, 4).join(' | ');
      expect(r.responses[0]?.status, label).toBe(400);
      // Refused on the command route: every one is on record, whichever layer refused it.
      const got = (await s.auditEvents()).slice(before);
      expect(got, label).toMatchObject([{ type: 'task.blocked', actor: null, path: INVOKE }]);
    }
    await s.expectNothingGated();
  });

  it('underscore spellings of framing and routing headers are refused (CGI-style servers alias them)', async () => {
    for (const name of ['Content_Encoding', 'Transfer_Encoding', 'Content_Type', 'X_Original_URL']) {
      const r = await send(s.proxy, { target: '/adminapi/beta/contoso/Mailbox', headers: { Authorization: s.auth.eve!, [name]: name.startsWith('X') ? INVOKE : 'gzip' }, body: GATED });
      expect(r.status, name).toBe(400);
    }
    expect(await s.upstream.executed()).toEqual([]);
  });

  it('chunked trailers do not add headers after classification', async () => {
    const { gzipSync } = await import('node:zlib');
    const trailer = Buffer.concat([chunked([gzipSync(GATED)]).subarray(0, -2), Buffer.from('Content-Encoding: gzip\r\n\r\n')]);
    const r = await exchange(s.proxy, [head([`Authorization: ${s.auth.eve}`, 'Transfer-Encoding: chunked', 'Trailer: Content-Encoding']), trailer]);
    expect(r.responses.map((x) => x.status)).toEqual([400]); // gzip bytes with no Content-Encoding: not JSON
    await s.expectNothingGated();
  });

  it('CONNECT is not tunnelled', async () => {
    const r = await exchange(s.proxy, `CONNECT 127.0.0.1:${new URL(s.upstream.url).port} HTTP/1.1\r\nHost: x\r\n\r\n${requestBytes({ target: INVOKE, body: GATED }).toString('latin1')}`, { timeoutMs: 3_000 });
    expect(r.responses.every((x) => x.status >= 400)).toBe(true);
    expect(await s.upstream.executed()).toEqual([]);
  });

  it('a plain chunked Transfer-Encoding in any case is accepted and classified', async () => {
    const r = await exchange(s.proxy, head([`Authorization: ${s.auth.eve}`, 'Transfer-Encoding: CHUNKED']) + chunked([GATED]).toString('latin1'));
    expect(r.responses.map((x) => x.status)).toEqual([403]);
    await s.expectNothingGated();
  });
});

describe('method override and protocol upgrade', () => {
  it('method-override headers do not change what is classified', async () => {
    const overrides: Array<[string, Record<string, string>]> = [
      ['POST', { 'X-HTTP-Method-Override': 'GET' }],
      ['POST', { 'X-HTTP-Method': 'HEAD' }],
      ['POST', { 'X-Method-Override': 'OPTIONS' }],
      ['GET', { 'X-HTTP-Method-Override': 'POST' }],
      ['PUT', {}],
      ['PATCH', {}],
      ['DELETE', { 'X-HTTP-Method-Override': 'POST' }],
    ];
    for (const [method, headers] of overrides) {
      const r = await send(s.proxy, { method, target: INVOKE, headers: { Authorization: s.auth.eve!, ...headers }, body: GATED });
      expect(r.status, `${method} ${JSON.stringify(headers)}`).toBe(403);
    }
    const q = await send(s.proxy, { target: `${INVOKE}?_method=GET&x-http-method-override=GET`, headers: { Authorization: s.auth.eve! }, body: GATED });
    expect(q.status).toBe(403);
    await s.expectNothingGated();
  });

  it('Upgrade (h2c, websocket) requests are classified and the upgrade is not passed on', async () => {
    const blocked = await send(s.proxy, { target: INVOKE, headers: { Authorization: s.auth.eve!, Connection: 'Upgrade, HTTP2-Settings', Upgrade: 'h2c', 'HTTP2-Settings': 'AAMAAABkAAQAAP__' }, body: GATED });
    expect(blocked.status).toBe(403);
    const ws = await send(s.proxy, { target: INVOKE, headers: { Authorization: s.auth.eve!, Connection: 'Upgrade', Upgrade: 'websocket' }, body: GATED });
    expect(ws.status).toBe(403);
    const passed = await send(s.proxy, { target: INVOKE, headers: { Connection: 'Upgrade', Upgrade: 'h2c' }, body: UNGATED });
    expect(passed.status).toBe(200);
    await s.expectNothingGated();
  });
});
