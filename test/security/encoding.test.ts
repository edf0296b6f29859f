import { brotliCompressSync, deflateRawSync, deflateSync, gzipSync, constants as zlib } from 'node:zlib';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { readLeniently } from './lenient-reader.js';
import { send } from './raw.js';
import { INVOKE, invokeBody, startStack, type Stack } from './stack.js';

/** Body encodings: content codings, charsets and BOMs the upstream would undo. */

let s: Stack;
beforeAll(async () => {
  s = await startStack();
});
afterAll(() => s?.stop());
beforeEach(() => s.upstream.reset());

const GATED = invokeBody('New-JournalRule');
const UNGATED = invokeBody('Get-Mailbox');

function lenientRunsGated(body: Buffer, headers: Record<string, string>): boolean {
  const r = readLeniently({ method: 'POST', target: INVOKE, headers: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v])), body });
  return r.status === 200 && r.executed.some((e) => e.gated);
}

async function expectStatus(cases: Array<{ body: Buffer; headers: Record<string, string>; label: string }>, status: number, lenient: boolean): Promise<void> {
  for (const c of cases) {
    if (lenient) expect(lenientRunsGated(c.body, c.headers), `the upstream would run a gated task (${c.label})`).toBe(true);
    const r = await send(s.proxy, { target: INVOKE, headers: { Authorization: s.auth.eve!, ...c.headers }, body: c.body });
    expect(r.status, `${c.label} → ${r.body}`).toBe(status);
  }
  await s.expectNothingGated();
}

const utf16le = (text: string) => Buffer.from(text, 'utf16le');
const utf16be = (text: string) => utf16le(text).swap16();

describe('content-encoding bypasses', () => {
  it('control: a compressed ungated body is decoded and forwarded as sent', async () => {
    const r = await send(s.proxy, { target: INVOKE, headers: { 'Content-Encoding': 'gzip' }, body: gzipSync(UNGATED) });
    expect(r.status).toBe(200);
    expect((await s.upstream.executed()).map((e) => e.cmdlet)).toEqual(['Get-Mailbox']);
  });

  it('gzip, x-gzip, deflate (zlib and raw), br, stacked and oddly spelled codings', async () => {
    await expectStatus(
      [
        { label: 'gzip', body: gzipSync(GATED), headers: { 'Content-Encoding': 'gzip' } },
        { label: 'x-gzip', body: gzipSync(GATED), headers: { 'Content-Encoding': 'x-gzip' } },
        { label: 'GZIP', body: gzipSync(GATED), headers: { 'Content-Encoding': ' GZIP ' } },
        { label: 'deflate zlib', body: deflateSync(GATED), headers: { 'Content-Encoding': 'deflate' } },
        { label: 'deflate raw', body: deflateRawSync(GATED), headers: { 'Content-Encoding': 'deflate' } },
        { label: 'br', body: brotliCompressSync(GATED), headers: { 'Content-Encoding': 'br' } },
        { label: 'gzip, br', body: brotliCompressSync(gzipSync(GATED)), headers: { 'Content-Encoding': 'gzip, br' } },
        { label: 'identity, gzip', body: gzipSync(GATED), headers: { 'Content-Encoding': 'identity, gzip' } },
        { label: 'multi-member gzip', body: Buffer.concat([gzipSync(GATED.slice(0, 10)), gzipSync(GATED.slice(10))]), headers: { 'Content-Encoding': 'gzip' } },
        { label: 'gzip with text/plain', body: gzipSync(GATED), headers: { 'Content-Encoding': 'gzip', 'Content-Type': 'text/plain' } },
      ],
      403,
      true,
    );
  });

  it('each coding is undone even when the body is in two separate Content-Encoding headers', async () => {
    const r = await send(s.proxy, { target: INVOKE, headers: { Authorization: s.auth.eve!, 'Content-Encoding': 'gzip', 'content-encoding': 'br' }, body: brotliCompressSync(gzipSync(GATED)) });
    expect(r.status).toBe(403);
    await s.expectNothingGated();
  });

  it('unknown, corrupt or absurdly stacked codings are refused', async () => {
    await expectStatus(
      [
        { label: 'compress', body: Buffer.from(GATED), headers: { 'Content-Encoding': 'compress' } },
        { label: 'zstd', body: Buffer.from(GATED), headers: { 'Content-Encoding': 'zstd' } },
        { label: 'gzip;q=1', body: gzipSync(GATED), headers: { 'Content-Encoding': 'gzip;q=1' } },
        { label: 'corrupt gzip', body: gzipSync(GATED).subarray(0, 20), headers: { 'Content-Encoding': 'gzip' } },
        { label: 'gzip+garbage', body: Buffer.concat([gzipSync(GATED), Buffer.from('garbage')]), headers: { 'Content-Encoding': 'gzip' } },
        { label: 'plain body labelled gzip', body: Buffer.from(GATED), headers: { 'Content-Encoding': 'gzip' } },
        { label: '4 layers', body: gzipSync(gzipSync(gzipSync(gzipSync(GATED)))), headers: { 'Content-Encoding': 'gzip, gzip, gzip, gzip' } },
      ],
      400,
      false,
    );
  });

  it('zip bombs are refused with 413 whatever the coding', async () => {
    const huge = Buffer.alloc(16 * 1024 * 1024, 0x20);
    const bomb = Buffer.from(`{"CmdletInput":{"CmdletName":"New-JournalRule","Parameters":{"Pad":"${' '.repeat(2 * 1024 * 1024)}"}}}`);
    await expectStatus(
      [
        { label: 'gzip 16 MiB of spaces', body: gzipSync(huge, { level: 9 }), headers: { 'Content-Encoding': 'gzip' } },
        { label: 'br 16 MiB', body: brotliCompressSync(huge, { params: { [zlib.BROTLI_PARAM_QUALITY]: 5 } }), headers: { 'Content-Encoding': 'br' } },
        { label: 'deflate 16 MiB', body: deflateSync(huge), headers: { 'Content-Encoding': 'deflate' } },
        { label: 'raw deflate 16 MiB', body: deflateRawSync(huge), headers: { 'Content-Encoding': 'deflate' } },
        { label: 'nested gzip bomb', body: gzipSync(gzipSync(huge)), headers: { 'Content-Encoding': 'gzip, gzip' } },
        { label: 'gated JSON just over the limit', body: gzipSync(bomb), headers: { 'Content-Encoding': 'gzip' } },
      ],
      413,
      false,
    );
  });
});

describe('charset and BOM bypasses', () => {
  it('UTF-8 BOM, UTF-16 LE/BE BOMs and a declared UTF-16 charset', async () => {
    await expectStatus(
      [
        { label: 'utf-8 BOM', body: Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(GATED)]), headers: {} },
        { label: 'utf-16le BOM', body: Buffer.concat([Buffer.from([0xff, 0xfe]), utf16le(GATED)]), headers: {} },
        { label: 'utf-16be BOM', body: Buffer.concat([Buffer.from([0xfe, 0xff]), utf16be(GATED)]), headers: {} },
        { label: 'utf-16be BOM over a utf-8 label', body: Buffer.concat([Buffer.from([0xfe, 0xff]), utf16be(GATED)]), headers: { 'Content-Type': 'application/json; charset=utf-8' } },
        { label: 'charset=utf-16le, no BOM', body: utf16le(GATED), headers: { 'Content-Type': 'application/json; charset=utf-16le' } },
        { label: 'charset="UTF-16BE", no BOM', body: utf16be(GATED), headers: { 'Content-Type': 'application/json; charset="UTF-16BE"' } },
        { label: 'gzip over utf-16le', body: gzipSync(Buffer.concat([Buffer.from([0xff, 0xfe]), utf16le(GATED)])), headers: { 'Content-Encoding': 'gzip' } },
        { label: 'utf-16 with a Unicode dash', body: Buffer.concat([Buffer.from([0xff, 0xfe]), utf16le(invokeBody('New\u2212JournalRule'))]), headers: {} },
      ],
      403,
      true,
    );
  });

  it('bodies are read whatever the Content-Type says', async () => {
    const types = ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/xml', 'application/octet-stream', ''];
    await expectStatus(
      types.map((t) => ({ label: t || '(empty)', body: Buffer.from(GATED), headers: t ? { 'Content-Type': t } : ({} as Record<string, string>) })),
      403,
      true,
    );
  });

  it('an ASCII body under an ASCII-compatible charset label reads the same', async () => {
    await expectStatus([{ label: 'windows-1252', body: Buffer.from(GATED), headers: { 'Content-Type': 'application/json; charset=windows-1252' } }], 403, true);
  });

  it('charsets under which some reader would see a different text are refused', async () => {
    const enDash = Buffer.from(invokeBody('New\u2013JournalRule'), 'utf8'); // UTF-8 bytes; as Latin-1 it would read "New\u00e2\u0080\u0093JournalRule"
    await expectStatus(
      [
        { label: 'latin1 label over UTF-8 bytes', body: enDash, headers: { 'Content-Type': 'application/json; charset=iso-8859-1' } },
        { label: 'us-ascii label over UTF-8 bytes', body: enDash, headers: { 'Content-Type': 'application/json; charset=us-ascii' } },
        { label: 'utf-7', body: Buffer.from(invokeBody('New+IBM-JournalRule')), headers: { 'Content-Type': 'application/json; charset=utf-7' } },
        { label: 'ebcdic', body: Buffer.from(GATED), headers: { 'Content-Type': 'application/json; charset=ibm037' } },
        { label: 'two charsets', body: Buffer.from(GATED), headers: { 'Content-Type': 'application/json; charset=utf-8; charset=utf-16le' } },
        { label: 'utf-32le BOM', body: Buffer.concat([Buffer.from([0xff, 0xfe, 0, 0]), Buffer.from(GATED)]), headers: {} },
        { label: 'invalid utf-8', body: Buffer.from([...Buffer.from('{"CmdletInput":{"CmdletName":"New-Journal'), 0xc0, 0xaf, ...Buffer.from('Rule"}}')]), headers: {} },
        { label: 'utf-16 without BOM or label', body: utf16le(GATED), headers: {} },
        { label: 'double BOM', body: Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf, 0xef, 0xbb, 0xbf]), Buffer.from(GATED)]), headers: {} },
      ],
      400,
      false,
    );
  });
});
