import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/gateway.js';
import { call, grantJournal } from './helpers/flows.js';
import { startStateGateway } from './helpers/inproc.js';
import { useUpstream } from './helpers/suite.js';
import { STATE_POLICIES } from './helpers/policies.js';
import { runCli, spawnGateway } from './helpers/process.js';

const upstreamOf = useUpstream();

async function dataDirWithConfig(): Promise<{ dataDir: string; config: string }> {
  const dataDir = await tempDir();
  const config = join(dataDir, 'policies.yaml');
  await writeFile(config, STATE_POLICIES);
  return { dataDir, config };
}

/** Start time of `pid` as /proc shows it (what the lock records to tell a reused pid). */
async function startOf(pid: number): Promise<string> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]!;
}

describe('one process per data dir (gateway processes)', () => {
  it('a second process on the same data dir refuses to start, naming the first one; the first is untouched', async () => {
    const { dataDir, config } = await dataDirWithConfig();
    const first = await spawnGateway({ dataDir, configPath: config, upstreamUrl: upstreamOf().url });
    await grantJournal('zoe@contoso.com', first.controlUrl, first.controlUrl);
    const audit = await readFile(join(dataDir, 'audit.jsonl'));
    const journal = await readFile(join(dataDir, 'state.journal'));

    const second = spawnGateway({ dataDir, configPath: config, upstreamUrl: upstreamOf().url });
    await expect(second).rejects.toThrow(/gateway exited \(1\) before starting/);
    const err = String(await second.catch((e: unknown) => e));
    expect(err).toContain(`in use by another pamgate process (pid ${first.child.pid}`);
    expect(err).toContain(join(dataDir, 'pamgate.lock'));
    expect(err).not.toMatch(/\n\s+at /); // an operator's error, not a stack trace

    // Nothing of the second process reached the data dir; the first still serves and verifies.
    expect(await readFile(join(dataDir, 'audit.jsonl'))).toEqual(audit);
    expect(await readFile(join(dataDir, 'state.journal'))).toEqual(journal);
    expect(await call(first.proxyUrl, 'zoe@contoso.com', 'New-JournalRule')).toBe(200);
    expect(await first.term()).toBe(0);
    expect(existsSync(join(dataDir, 'pamgate.lock'))).toBe(false); // released on a clean stop
    const verify = await runCli(['audit', 'verify', dataDir]);
    expect(verify.code, verify.stderr).toBe(0);
  });

  it('a lock left by kill -9 is taken over on the next start, and the log says so', async () => {
    const { dataDir, config } = await dataDirWithConfig();
    const first = await spawnGateway({ dataDir, configPath: config, upstreamUrl: upstreamOf().url });
    await grantJournal('amy@contoso.com', first.controlUrl, first.controlUrl);
    const pid = first.child.pid!;
    await first.kill9();
    expect(JSON.parse(await readFile(join(dataDir, 'pamgate.lock'), 'utf8'))).toMatchObject({ pid });

    const next = await spawnGateway({ dataDir, configPath: config, upstreamUrl: upstreamOf().url });
    const took = next.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => typeof l['msg'] === 'string' && (l['msg'] as string).includes('took over a stale data dir lock'));
    expect(took).toMatchObject({ stalePid: pid, level: 40 });
    expect(JSON.parse(await readFile(join(dataDir, 'pamgate.lock'), 'utf8'))).toMatchObject({ pid: next.child.pid });
    expect(await call(next.proxyUrl, 'amy@contoso.com', 'New-JournalRule')).toBe(200); // state intact
    expect(await next.term()).toBe(0);
    expect(existsSync(join(dataDir, 'pamgate.lock'))).toBe(false);
    expect((await runCli(['audit', 'verify', dataDir])).code).toBe(0);
  });
});

describe('one gateway per data dir (in process)', () => {
  const silent = pino({ level: 'silent' });

  it('refuses a second gateway in the same process, and allows one once the first has closed', async () => {
    const { dataDir, config } = await dataDirWithConfig();
    const first = await startStateGateway({ policies: STATE_POLICIES, configPath: config, dataDir, upstreamUrl: upstreamOf().url });
    await expect(startStateGateway({ policies: STATE_POLICIES, configPath: config, dataDir, upstreamUrl: upstreamOf().url })).rejects.toThrow(/in use by another pamgate process/);
    await first.close();
    const again = await startStateGateway({ policies: STATE_POLICIES, configPath: config, dataDir, upstreamUrl: upstreamOf().url, log: silent });
    await again.close();
  });

  it('judges a lock by pid, process start time and host', async () => {
    const { dataDir, config } = await dataDirWithConfig();
    const lockFile = join(dataDir, 'pamgate.lock');
    const live = upstreamOf().process.pid!;
    const start = (): Promise<unknown> => startStateGateway({ policies: STATE_POLICIES, configPath: config, dataDir, upstreamUrl: upstreamOf().url }).then((g) => g.close());
    const lock = async (o: Record<string, unknown>): Promise<void> => writeFile(lockFile, JSON.stringify({ host: hostname(), since: '2026-01-01T00:00:00.000Z', ...o }) + '\n');

    // A live process with the recorded start time: held.
    await lock({ pid: live, start: await startOf(live) });
    await expect(start()).rejects.toThrow(new RegExp(`pid ${live}\\b.*still running`));
    // The same pid, but a different start time: the pid was reused, the holder is gone.
    await lock({ pid: live, start: '1' });
    await start();
    // Our own pid, not held by us: an earlier incarnation (pid 1 in a restarted container).
    await lock({ pid: process.pid, start: '1' });
    await start();
    // Another host: liveness cannot be judged from here, so it is held (fail closed).
    await lock({ pid: 999_999_999, host: 'elsewhere', start: null });
    await expect(start()).rejects.toThrow(/on host elsewhere.*another host/);
    // Half written by a crash long ago (empty, old): stale.
    await writeFile(lockFile, '');
    const old = new Date(Date.now() - 60_000);
    const { utimes } = await import('node:fs/promises');
    await utimes(lockFile, old, old);
    await start();
    expect(existsSync(lockFile)).toBe(false);
  });
});
