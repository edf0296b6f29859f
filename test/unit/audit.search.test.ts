import { appendFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeAuditFs } from '../../src/audit/fs.js';
import { AuditLog, type AuditFs } from '../../src/audit/log.js';
import { readAuditEvents, type AuditFilter } from '../../src/audit/search.js';

let dir: string;
let path: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pamgate-audit-'));
  let clock = Date.UTC(2026, 10, 23, 10, 0, 0);
  const log = await AuditLog.open({ dir, now: () => clock });
  const at = async (minute: number, event: Parameters<AuditLog['append']>[0]): Promise<void> => {
    clock = Date.UTC(2026, 10, 23, 10, minute, 0);
    await log.append(event);
  };
  await at(0, { type: 'gateway.started' });
  await at(1, { type: 'request.created', actor: 'Alice@Contoso.com', task: 'New-JournalRule', requestId: 'r1' });
  await at(2, { type: 'request.approved', actor: 'bob@contoso.com', requestId: 'r1' });
  await at(3, { type: 'task.executed', actor: 'alice@contoso.com', task: 'new-journalrule', requestId: 'r1' });
  await at(4, { type: 'task.blocked', actor: 'eve@contoso.com', task: 'Set-Mailbox' });
  await log.close();
  path = log.path;
  await appendFile(path, '{"seq":6,"torn'); // search skips what it cannot parse
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function seqs(filter?: AuditFilter): Promise<number[]> {
  const out: number[] = [];
  for await (const ev of readAuditEvents(path, filter)) out.push(ev['seq'] as number);
  return out;
}

describe('readAuditEvents', () => {
  it('streams every parseable event in order without a filter', async () => {
    expect(await seqs()).toEqual([1, 2, 3, 4, 5]);
  });

  it('filters by exact type and by type prefix', async () => {
    expect(await seqs({ type: 'task.blocked' })).toEqual([5]);
    expect(await seqs({ type: 'request.*' })).toEqual([2, 3]);
    expect(await seqs({ type: 'request' })).toEqual([]);
  });

  it('matches actor and task case-insensitively and requestId exactly', async () => {
    expect(await seqs({ actor: 'ALICE@contoso.com' })).toEqual([2, 4]);
    expect(await seqs({ task: 'New-JournalRule', actor: 'alice@contoso.com' })).toEqual([2, 4]);
    expect(await seqs({ requestId: 'r1' })).toEqual([2, 3, 4]);
    expect(await seqs({ requestId: 'R1' })).toEqual([]);
  });

  it('bounds by time: since inclusive, until exclusive', async () => {
    expect(await seqs({ since: '2026-11-23T10:01:00Z', until: '2026-11-23T10:03:00Z' })).toEqual([2, 3]);
    expect(await seqs({ since: '2026-11-23T10:04:00Z' })).toEqual([5]);
  });

  it('rejects a since/until that is not a date', async () => {
    await expect(seqs({ since: 'yesterday-ish' })).rejects.toThrow(/since is not a date/);
  });

  it('stops reading when the consumer stops', async () => {
    const gen = readAuditEvents(path);
    const first = await gen.next();
    expect(first.value).toMatchObject({ seq: 1 });
    await gen.return(undefined);
    expect((await gen.next()).done).toBe(true);
  });
});

describe('readAuditEvents while the writer is under load', () => {
  it('finds lines durable in audit.wal that are not appended to audit.jsonl yet', async () => {
    const fresh = await mkdtemp(join(tmpdir(), 'pamgate-audit-'));
    let holdLive: (() => void) | null = null;
    let held = false;
    const fs: AuditFs = {
      ...nodeAuditFs,
      write: async (fd, buf, off, len, pos) => {
        // The first deferred append of audit.jsonl waits until the test lets it go.
        if (pos === null && held) await new Promise<void>((resolve) => (holdLive = resolve));
        return nodeAuditFs.write(fd, buf, off, len, pos);
      },
    };
    try {
      const log = await AuditLog.open({ dir: fresh, fs });
      await log.append({ type: 'first' });
      held = true;
      await Promise.all(Array.from({ length: 6 }, (_, i) => log.append({ type: `loaded${i}`, task: 'Set-Mailbox' })));
      await new Promise((r) => setTimeout(r, 20));
      expect(holdLive).not.toBeNull(); // the append is held: audit.jsonl lacks the six
      const types: string[] = [];
      for await (const ev of readAuditEvents(join(fresh, 'audit.jsonl'))) types.push(ev['type'] as string);
      expect(types).toEqual(['first', ...Array.from({ length: 6 }, (_, i) => `loaded${i}`)]);
      const filtered: string[] = [];
      for await (const ev of readAuditEvents(join(fresh, 'audit.jsonl'), { type: 'loaded*', task: 'set-mailbox' })) filtered.push(ev['type'] as string);
      expect(filtered).toHaveLength(6);
      held = false;
      holdLive!();
      await log.close();
      const after: string[] = [];
      for await (const ev of readAuditEvents(join(fresh, 'audit.jsonl'))) after.push(ev['type'] as string);
      expect(after).toEqual(types); // once appended, each line is read once
    } finally {
      await rm(fresh, { recursive: true, force: true });
    }
  });
});
