import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { lenientPath } from './lenient-reader.js';
import { send, type RequestSpec } from './raw.js';
import { invokeBody, startStack, type Stack } from './stack.js';

/** Every spelling of the request target that could reach InvokeCommand or $batch is classified. */

let s: Stack;
beforeAll(async () => {
  s = await startStack();
});
afterAll(() => s?.stop());
beforeEach(() => s.upstream.reset());

const GATED = invokeBody('New-JournalRule');
const routes = (target: string): boolean => /^\/adminapi\/[^/]+\/[^/]+\/(invokecommand|\$batch)$/.test(lenientPath(target) ?? '');

async function expectBlocked(targets: string[], opts: { lenientRoutes?: boolean; extra?: Partial<RequestSpec> } = {}): Promise<void> {
  for (const target of targets) {
    if (opts.lenientRoutes ?? true) expect(routes(target), `the upstream routes ${target} to a command endpoint`).toBe(true);
    const r = await send(s.proxy, { target, headers: { Authorization: s.auth.eve! }, body: GATED, ...opts.extra });
    expect(r.status, `${target} → ${r.body}`).toBe(403);
  }
  await s.expectNothingGated();
}

describe('path bypasses', () => {
  it('control: a path that reaches no command endpoint is forwarded untouched', async () => {
    const r = await send(s.proxy, { method: 'GET', target: '/adminapi/beta/contoso/Mailbox', headers: {} });
    expect(r.status).toBe(404); // the upstream's answer: it was forwarded, not classified
    expect(r.body).toContain('no route');
  });

  it('path casing', async () => {
    await expectBlocked(['/ADMINAPI/BETA/CONTOSO/INVOKECOMMAND', '/AdminApi/v1.0/contoso/invokecommand', '/adminapi/beta/contoso/iNvOkEcOmMaNd']);
  });

  it('percent-encoding (letters, lower-case hex, slashes)', async () => {
    await expectBlocked([
      '/adminapi/beta/contoso/%49nvoke%43ommand',
      '/adminapi/beta/contoso/%69%6e%76%6f%6b%65%63%6f%6d%6d%61%6e%64',
      '/%61dminapi/beta/contoso/InvokeCommand',
      '/adminapi%2Fbeta%2Fcontoso%2FInvokeCommand',
      '/adminapi/beta/contoso%2finvokecommand',
    ]);
  });

  it('double and IIS %u encoding (beyond the reference upstream, still classified)', async () => {
    await expectBlocked(['/adminapi/beta/contoso/%2549nvokeCommand', '/adminapi/beta/contoso/%252549nvokeCommand', '/adminapi/beta/contoso/%u0049nvokeCommand'], { lenientRoutes: false });
  });

  it('repeated slashes', async () => {
    await expectBlocked(['//adminapi//beta///contoso//InvokeCommand', '/adminapi/beta/contoso//InvokeCommand//']);
  });

  it('dot segments, plain and encoded', async () => {
    await expectBlocked([
      '/adminapi/beta/x/../contoso/./InvokeCommand',
      '/adminapi/beta/contoso/InvokeCommand/x/..',
      '/adminapi/beta/contoso/%2e/InvokeCommand',
      '/adminapi/beta/x/%2e%2e/contoso/InvokeCommand',
      '/adminapi/beta/x/%2E%2E%2Fcontoso/InvokeCommand',
      '/../../adminapi/beta/contoso/InvokeCommand',
    ]);
  });

  it('trailing slash', async () => {
    await expectBlocked(['/adminapi/beta/contoso/InvokeCommand/', '/adminapi/beta/contoso/InvokeCommand/./']);
  });

  it('query strings and fragments', async () => {
    await expectBlocked(['/adminapi/beta/contoso/InvokeCommand?api-version=1', '/adminapi/beta/contoso/InvokeCommand?']);
  });

  it('Windows and servlet spellings: backslashes, trailing dots, path parameters, fullwidth', async () => {
    await expectBlocked(
      [
        '/adminapi/beta/contoso/InvokeCommand.',
        '/adminapi/beta/contoso/InvokeCommand%20',
        '/adminapi/beta/contoso/InvokeCommand;jsessionid=1',
        '/adminapi/beta/contoso/x;/../InvokeCommand',
        '/adminapi\\beta\\contoso\\InvokeCommand',
        '/adminapi/beta/contoso/%EF%BC%A9nvokeCommand', // fullwidth I
        '/adminapi/beta/contoso/Invoke%E2%80%8BCommand', // zero-width space
      ],
      { lenientRoutes: false },
    );
  });

  it('$batch spellings', async () => {
    await expectBlocked(['/adminapi/beta/contoso/$batch', '/adminapi/beta/contoso/%24batch', '/adminapi/beta/contoso/%24BATCH/']);
  });

  it('absolute-form request targets are refused (400) before classification, with or without a token', async () => {
    const targets = [
      'http://evil.example/adminapi/beta/contoso/InvokeCommand',
      'HTTP://EVIL.EXAMPLE:81/adminapi/beta/contoso/InvokeCommand',
      'https://user:pw@evil.example/adminapi/beta/contoso/%49nvokeCommand',
      'http://evil.example//adminapi/beta/contoso/InvokeCommand',
      // the host ends at "%" for url.parse but at "/" for a path normaliser
      'http://a%2fadminapi%2fbeta%2fcontoso%2fInvokeCommand',
      'http://x@a%2F..%2Fadminapi%2Fv%2Ft%2F%69nvokecommand?',
      '*',
    ];
    for (const target of targets) {
      for (const headers of [{ Authorization: s.auth.eve! }, {}]) {
        const before = (await s.auditEvents()).length;
        const r = await send(s.proxy, { target, headers, body: GATED });
        expect(r.status, `${target} → ${r.body}`).toBe(400);
        // Each target that names the command endpoint is an attempt on record; "*" names none.
        const recorded = (await s.auditEvents()).slice(before);
        if (target === '*') expect(recorded).toEqual([]);
        else expect(recorded, target).toMatchObject([{ type: 'task.blocked', reason: 'the request target must be a path starting with "/"', path: target }]);
      }
    }
    await s.expectNothingGated();
  });

  it('dot segments that climb out of the command endpoint are still classified (a server might not resolve them)', async () => {
    await expectBlocked(['/adminapi/beta/contoso/InvokeCommand/..', '/adminapi/beta/contoso/InvokeCommand;/..', '/adminapi/beta/contoso/InvokeCommand/%2e%2e'], { lenientRoutes: false });
  });

  it('an undecodable target on a command route is read as gateable', async () => {
    await expectBlocked(['/adminapi/beta/contoso/InvokeCommand%C0%AF', '/adminapi/beta/%ZZ/InvokeCommand', '/adminapi/beta/contoso/%uD800InvokeCommand'], { lenientRoutes: false });
  });

  it('path-override headers (X-Original-URL, X-Rewrite-URL) cannot move a command onto a harmless path', async () => {
    for (const header of ['X-Original-URL', 'X-Rewrite-URL', 'X-Forwarded-Uri']) {
      const r = await send(s.proxy, { target: '/adminapi/beta/contoso/Mailbox', headers: { Authorization: s.auth.eve!, [header]: '/adminapi/beta/contoso/%49nvokeCommand' }, body: GATED });
      expect(r.status, header).toBe(403);
    }
    await s.expectNothingGated();
  });

  it('raw UTF-8 bytes in a path-override header are read as UTF-8 too (fullwidth, zero-width), and bytes that are not UTF-8 as a command route', async () => {
    const raw = (text: string): string => Buffer.from(text, 'utf8').toString('latin1'); // the header's bytes, one char each
    for (const value of [raw('/adminapi/beta/contoso/\uFF29nvokeCommand'), raw('/adminapi/beta/contoso/Invoke\u200BCommand'), '/adminapi/beta/contoso/\xC0\xAFInvokeCommand']) {
      const r = await send(s.proxy, { target: '/adminapi/beta/contoso/Mailbox', headers: { Authorization: s.auth.eve!, 'X-Original-URL': value }, body: GATED });
      expect(r.status, JSON.stringify(value)).toBe(403);
    }
    await s.expectNothingGated();
  });

  it('characters a culture-aware comparison skips or folds away: NUL, other controls, combining marks left by case folding', async () => {
    await expectBlocked(['/adminapi/beta/contoso/Invoke%00Command', '/adminapi/beta/contoso/%C4%B0nvokeCommand', '/adminapi/beta/contoso/Invoke%CD%8FCommand'], { lenientRoutes: false });
  });
});
