import { mkdtemp, readFile, rm, truncate, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog } from '../../src/audit/log.js';
import { verifyAuditFile } from '../../src/audit/verify.js';

let dir: string;
let path: string;
let rows: string[]; // the file's lines, without '\n'

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pamgate-audit-'));
  const log = await AuditLog.open({ dir });
  await Promise.all(
    Array.from({ length: 6 }, (_, i) => log.append({ type: 'request.approved', actor: `approver${i}@contoso.com`, comment: 'ok' })),
  );
  await log.close();
  path = log.path;
  rows = (await readFile(path, 'utf8')).split('\n').slice(0, -1);
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function rewrite(lines: string[]): Promise<void> {
  await writeFile(path, lines.map((l) => l + '\n').join(''));
}

describe('verifyAuditFile', () => {
  it('accepts an untouched file', async () => {
    const last = JSON.parse(rows[5]!) as { hash: string };
    expect(await verifyAuditFile(path)).toEqual({ ok: true, events: 6, lastHash: last.hash });
  });

  it('accepts an empty file with 0 events', async () => {
    const empty = await mkdtemp(join(tmpdir(), 'pamgate-audit-'));
    try {
      await writeFile(join(empty, 'audit.jsonl'), '');
      expect(await verifyAuditFile(join(empty, 'audit.jsonl'))).toEqual({ ok: true, events: 0, lastHash: '0'.repeat(64) });
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });

  it('accepts a log opened and closed with no event (its audit.head anchored at seq 0 by open)', async () => {
    const fresh = await mkdtemp(join(tmpdir(), 'pamgate-audit-'));
    try {
      await (await AuditLog.open({ dir: fresh })).close();
      expect(JSON.parse(await readFile(join(fresh, 'audit.head'), 'utf8'))).toEqual({ seq: 0, hash: '0'.repeat(64) });
      expect(await verifyAuditFile(fresh)).toEqual({ ok: true, events: 0, lastHash: '0'.repeat(64) });
    } finally {
      await rm(fresh, { recursive: true, force: true });
    }
  });

  it('still refuses a head that holds something unreadable', async () => {
    await writeFile(join(dir, 'audit.head'), 'garbage');
    expect(await verifyAuditFile(path)).toMatchObject({ ok: false, reason: expect.stringMatching(/audit.head is unreadable/) });
  });

  it('detects an edited field', async () => {
    rows[2] = rows[2]!.replace('"comment":"ok"', '"comment":"OK"');
    await rewrite(rows);
    expect(await verifyAuditFile(path)).toEqual({ ok: false, line: 3, reason: 'hash mismatch (line edited)' });
  });

  it('detects an edit whose hash was recomputed, at the next line', async () => {
    const { createHash } = await import('node:crypto');
    const edited = rows[2]!.replace('"comment":"ok"', '"comment":"OK"').replace(/,"hash":"[0-9a-f]{64}"\}$/, '');
    rows[2] = edited + ',"hash":"' + createHash('sha256').update(edited + '}').digest('hex') + '"}';
    await rewrite(rows);
    expect(await verifyAuditFile(path)).toEqual({ ok: false, line: 4, reason: 'prev does not match previous hash' });
  });

  it('detects a deleted middle line', async () => {
    rows.splice(3, 1);
    await rewrite(rows);
    expect(await verifyAuditFile(path)).toEqual({ ok: false, line: 4, reason: 'seq 5 expected 4 (line removed or reordered)' });
  });

  it('detects two swapped lines', async () => {
    [rows[1], rows[2]] = [rows[2]!, rows[1]!];
    await rewrite(rows);
    expect(await verifyAuditFile(path)).toEqual({ ok: false, line: 2, reason: 'seq 3 expected 2 (line removed or reordered)' });
  });

  it('detects a removed last line through audit.head', async () => {
    await rewrite(rows.slice(0, 5));
    expect(await verifyAuditFile(path)).toEqual({
      ok: false, line: 6, reason: 'file truncated: head records seq 6 but file ends at seq 5',
    });
    // Without the anchor the shortened chain is self-consistent: a missing head next to events is itself a failure.
    await unlink(join(dir, 'audit.head'));
    expect(await verifyAuditFile(path)).toEqual({
      ok: false, line: 6, reason: 'anchor missing: audit.head is absent but the chain holds 5 events, so lines cut from its end cannot be ruled out',
    });
  });

  it('fails on an emptied audit.head next to events, and on a missing one even with the whole chain', async () => {
    await writeFile(join(dir, 'audit.head'), '');
    expect(await verifyAuditFile(path)).toMatchObject({ ok: false, line: 7, reason: expect.stringMatching(/^anchor missing: audit.head is absent/) });
    await unlink(join(dir, 'audit.head'));
    expect(await verifyAuditFile(dir)).toMatchObject({ ok: false, line: 7, reason: expect.stringMatching(/^anchor missing/) });
  });

  it('needs no anchor for a copy under another name, or for a rotated segment', async () => {
    const copy = join(dir, 'copy.jsonl');
    await writeFile(copy, rows.map((l) => l + '\n').join(''));
    await unlink(join(dir, 'audit.head'));
    expect(await verifyAuditFile(copy)).toMatchObject({ ok: true, events: 6 });
  });

  it('detects a file emptied completely', async () => {
    await truncate(path, 0);
    expect(await verifyAuditFile(path)).toEqual({
      ok: false, line: 1, reason: 'file truncated: head records seq 6 but file ends at seq 0',
    });
  });

  it('detects lines replaced after a truncation (head seq present but hash differs)', async () => {
    const other = JSON.parse(rows[4]!) as { hash: string };
    const headText = JSON.stringify({ seq: 5, hash: other.hash.replace(/^./, (c) => (c === 'a' ? 'b' : 'a')) });
    await writeFile(join(dir, 'audit.head'), headText.padEnd(128, ' '));
    const result = await verifyAuditFile(path);
    expect(result).toMatchObject({ ok: false, line: 5 });
    expect(result.ok ? '' : result.reason).toMatch(/^file truncated and rewritten: head records seq 5/);
  });

  it('detects a byte-truncated file (torn last line)', async () => {
    const size = (await readFile(path)).length;
    await truncate(path, size - 10);
    expect(await verifyAuditFile(path)).toEqual({ ok: false, line: 6, reason: 'missing trailing newline (torn last line)' });
  });

  it('detects a line that is not JSON', async () => {
    rows[0] = rows[0]!.slice(0, 20);
    await rewrite(rows);
    expect(await verifyAuditFile(path)).toEqual({ ok: false, line: 1, reason: 'not valid JSON' });
  });

  it('detects a line whose hash field was removed', async () => {
    rows[5] = rows[5]!.replace(/,"hash":"[0-9a-f]{64}"\}$/, '}');
    await rewrite(rows);
    expect(await verifyAuditFile(path)).toMatchObject({ ok: false, line: 6, reason: expect.stringMatching(/hash field/) });
  });

  it('works on the raw bytes: an equivalent but re-serialised line fails', async () => {
    rows[1] = JSON.stringify(JSON.parse(rows[1]!), null, 0).replace('{"seq"', '{ "seq"');
    await rewrite(rows);
    expect(await verifyAuditFile(path)).toEqual({ ok: false, line: 2, reason: 'hash mismatch (line edited)' });
  });

  it('reads lines spanning read chunks (large events)', async () => {
    const big = await mkdtemp(join(tmpdir(), 'pamgate-audit-'));
    try {
      const log = await AuditLog.open({ dir: big });
      for (let i = 0; i < 5; i++) await log.append({ type: 'notify.failed', detail: 'é'.repeat(40_000 + i) });
      await log.close();
      expect(await verifyAuditFile(log.path)).toMatchObject({ ok: true, events: 5 });
    } finally {
      await rm(big, { recursive: true, force: true });
    }
  });
});
