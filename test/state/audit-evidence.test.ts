import { createHash, randomBytes } from 'node:crypto';
import { chmod, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/gateway.js';
import { call } from './helpers/flows.js';
import { STATE_POLICIES } from './helpers/policies.js';
import { runCli, spawnGateway } from './helpers/process.js';
import { useUpstream } from './helpers/suite.js';

// The audit evidence as an attacker who can rewrite the data dir leaves it, checked through the
// real CLI against files a real gateway process wrote.

const upstreamOf = useUpstream();

async function setup(): Promise<{ dataDir: string; configPath: string; keyDir: string }> {
  const dataDir = await tempDir();
  const keyDir = await tempDir('pamgate-key-');
  const configPath = join(keyDir, 'policies.yaml');
  await writeFile(configPath, STATE_POLICIES);
  return { dataDir, configPath, keyDir };
}

async function traffic(proxyUrl: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) expect(await call(proxyUrl, 'eve@contoso.com', 'Remove-Mailbox')).toBe(403);
}

const rows = async (dataDir: string): Promise<string[]> => (await readFile(join(dataDir, 'audit.jsonl'), 'utf8')).split('\n').slice(0, -1);
const writeRows = (dataDir: string, lines: string[]): Promise<void> => writeFile(join(dataDir, 'audit.jsonl'), lines.map((l) => l + '\n').join(''));

describe('a missing anchor', () => {
  it('lines cut from the end with audit.head and audit.wal deleted fail verify, naming the missing anchor; a restart records it', async () => {
    const { dataDir, configPath } = await setup();
    const gw = await spawnGateway({ dataDir, configPath, upstreamUrl: upstreamOf().url });
    await traffic(gw.proxyUrl, 4);
    expect(await gw.term()).toBe(0);
    const before = await runCli(['audit', 'verify', dataDir]);
    expect(before.code, before.stderr).toBe(0);

    const lines = await rows(dataDir);
    await writeRows(dataDir, lines.slice(0, -2));
    await unlink(join(dataDir, 'audit.head'));
    await unlink(join(dataDir, 'audit.wal'));
    const cut = await runCli(['audit', 'verify', dataDir]);
    expect(cut.code).toBe(1);
    expect(cut.stderr).toMatch(/audit\.jsonl:\d+: anchor missing: audit\.head is absent but the chain holds \d+ events/);

    // The gateway starts (the cut is in the past), says so, and records it in the chain for good.
    const again = await spawnGateway({ dataDir, configPath, upstreamUrl: upstreamOf().url });
    expect(again.logs.some((l) => l.includes('"level":50') && l.includes('audit.head was missing'))).toBe(true);
    await traffic(again.proxyUrl, 1);
    expect(await again.term()).toBe(0);
    const after = await runCli(['audit', 'verify', dataDir]);
    expect(after.code).toBe(1);
    expect(after.stderr).toMatch(new RegExp(`audit\\.jsonl:${lines.length - 1}: audit\\.head was missing at start \\(missing\\)`));
  });

  it('a kill -9 right after start still verifies', async () => {
    const { dataDir, configPath } = await setup();
    const gw = await spawnGateway({ dataDir, configPath, upstreamUrl: upstreamOf().url });
    await traffic(gw.proxyUrl, 2);
    await gw.kill9();
    const r = await runCli(['audit', 'verify', dataDir]);
    expect(r.code, r.stderr).toBe(0);
  });
});

describe('keyed chain (PAMGATE_AUDIT_KEY_FILE)', () => {
  it('verify checks the macs with --key-file, skips them (saying so) without, fails with a wrong key or after a recomputed plain chain', async () => {
    const { dataDir, configPath, keyDir } = await setup();
    const keyFile = join(keyDir, 'audit.key');
    await writeFile(keyFile, randomBytes(32).toString('hex') + '\n', { mode: 0o400 });
    const gw = await spawnGateway({ dataDir, configPath, upstreamUrl: upstreamOf().url, env: { PAMGATE_AUDIT_KEY_FILE: keyFile } });
    await traffic(gw.proxyUrl, 5);
    await gw.kill9(); // a crash: the next start replays the WAL, with macs
    const gw2 = await spawnGateway({ dataDir, configPath, upstreamUrl: upstreamOf().url, env: { PAMGATE_AUDIT_KEY_FILE: keyFile } });
    await traffic(gw2.proxyUrl, 2);
    expect(await gw2.term()).toBe(0);

    const n = (await rows(dataDir)).length;
    const keyed = await runCli(['audit', 'verify', dataDir, '--key-file', keyFile]);
    expect(keyed.code, keyed.stderr).toBe(0);
    expect(keyed.stdout.trim()).toBe(`ok ${n} events, macs of ${n} lines and audit.head checked with the key`);
    const plain = await runCli(['audit', 'verify', dataDir]);
    expect(plain.code).toBe(0);
    expect(plain.stdout.trim()).toBe(`ok ${n} events`);
    expect(plain.stderr).toMatch(/keyed checks skipped: \d+ lines carry macs/);
    const otherKey = join(keyDir, 'other.key');
    await writeFile(otherKey, randomBytes(32).toString('hex'));
    const wrong = await runCli(['audit', 'verify', dataDir, '--key-file', otherKey]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/audit\.jsonl:1: mac mismatch/);

    // Someone who can rewrite the data dir but not read the key edits line 4 and recomputes the plain chain and the head.
    const lines = await rows(dataDir);
    let prev = (JSON.parse(lines[2]!) as { hash: string }).hash;
    for (let i = 3; i < lines.length; i++) {
      const body = lines[i]!.replace(/,"hash":"[0-9a-f]{64}"\}$/, '').replace(/"prev":"[0-9a-f]{64}"/, `"prev":"${prev}"`).replace('eve@contoso.com', 'bob@contoso.com');
      prev = createHash('sha256').update(body + '}').digest('hex');
      lines[i] = body + ',"hash":"' + prev + '"}';
    }
    await writeRows(dataDir, lines);
    await writeFile(join(dataDir, 'audit.head'), JSON.stringify({ seq: lines.length, hash: prev }).padEnd(256, ' '));
    expect((await runCli(['audit', 'verify', dataDir])).code).toBe(0); // the plain chain cannot tell
    const forged = await runCli(['audit', 'verify', dataDir, '--key-file', keyFile]);
    expect(forged.code).toBe(1);
    expect(forged.stderr).toMatch(/audit\.jsonl:4: mac mismatch/);
  });

  it('the gateway refuses to start with the key inside the data dir, unreadable, or too short', async () => {
    const { dataDir, configPath, keyDir } = await setup();
    const inside = join(dataDir, 'audit.key');
    await writeFile(inside, randomBytes(32).toString('hex'));
    const short = join(keyDir, 'short.key');
    await writeFile(short, 'abc\n');
    const unreadable = join(keyDir, 'unreadable.key');
    await writeFile(unreadable, randomBytes(32).toString('hex'));
    await chmod(unreadable, 0o000);
    const cases: Array<[string, RegExp]> = [
      [inside, /PAMGATE_AUDIT_KEY_FILE .*audit\.key is inside the data dir/],
      [short, /holds 3 bytes; the key needs at least 32/],
      [join(keyDir, 'missing.key'), /cannot read PAMGATE_AUDIT_KEY_FILE .*missing\.key: ENOENT/],
    ];
    if (process.getuid?.() !== 0) cases.push([unreadable, /cannot read PAMGATE_AUDIT_KEY_FILE .*unreadable\.key: EACCES/]);
    for (const [file, message] of cases) {
      const r = await spawnGateway({ dataDir, configPath, upstreamUrl: upstreamOf().url, env: { PAMGATE_AUDIT_KEY_FILE: file } }).then(
        () => 'started',
        (err: Error) => err.message,
      );
      expect(r).toMatch(/exited \(1\)/);
      expect(r).toMatch(message);
      expect(r.split('\n').filter((l) => l.startsWith('pamgate:'))).toHaveLength(1);
    }
  });
});
