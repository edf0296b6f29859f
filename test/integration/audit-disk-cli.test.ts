import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startTestGateway, tempDir } from '../helpers/gateway.js';
import { TEST_POLICIES } from '../helpers/policies.js';
import { runCli, spawnGateway } from '../helpers/process.js';
import { startUpstreamProcess } from '../helpers/upstream.js';

describe('pamgate serve: audit disk settings', () => {
  it('PAMGATE_AUDIT_MIN_FREE above the free space fails /readyz; a malformed setting stops the start with one line naming it', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'policies.yaml'), TEST_POLICIES);
    const env = { PAMGATE_CONFIG: join(dir, 'policies.yaml'), PAMGATE_DATA_DIR: join(dir, 'data'), UPSTREAM_URL: 'http://127.0.0.1:9', PAMGATE_JWT_SECRET: 'x'.repeat(32) };
    const gw = await spawnGateway({ ...env, PAMGATE_AUDIT_MIN_FREE: '100%' });
    try {
      const res = await fetch(`${gw.controlUrl}/readyz`);
      expect(res.status).toBe(503);
      expect(((await res.json()) as { reasons: Record<string, string> }).reasons['auditDisk']).toMatch(/watermark/);
      expect(gw.output()).toMatch(/"level":40.*below its free-space watermark/);
    } finally {
      await gw.stop();
    }
    await expect(spawnGateway({ ...env, PAMGATE_AUDIT_MIN_FREE: 'lots' })).rejects.toThrow(/exited with 1[\s\S]*pamgate: PAMGATE_AUDIT_MIN_FREE must be bytes .* got "lots"/);
    await expect(spawnGateway({ ...env, PAMGATE_AUDIT_RETENTION_DAYS: '-3' })).rejects.toThrow(/exited with 1[\s\S]*pamgate: PAMGATE_AUDIT_RETENTION_DAYS must be a number of days/);
  });
});

describe('pamgate audit export and verify after retention', () => {
  it('exports, verifies the retained tail and says what it no longer covers', async () => {
    const upstream = await startUpstreamProcess();
    const gw = await startTestGateway({ policies: TEST_POLICIES, upstreamUrl: upstream.url, auditMaxBytes: 4096, auditRetention: { days: 0, requireExport: true } });
    const dest = await tempDir('pamgate-export-');
    try {
      const body = JSON.stringify({ CmdletInput: { CmdletName: 'New-JournalRule', Parameters: {} } });
      const segments = async (d: string): Promise<string[]> => (await readdir(d)).filter((n) => /^audit-\d+\.jsonl$/.test(n)).sort();
      const fill = async (n: number): Promise<void> => {
        while ((await segments(gw.dataDir)).length < n) await (await fetch(`${gw.proxyUrl}/adminapi/beta/t/InvokeCommand`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })).arrayBuffer();
      };
      await fill(3);
      const exported = await runCli(['audit', 'export', dest, gw.dataDir]);
      expect(exported.code).toBe(0);
      expect(exported.stdout).toMatch(/^exported audit-000001\.jsonl sha256 [0-9a-f]{64}$/m);
      expect((await runCli(['audit', 'export', dest, gw.dataDir])).stdout).toMatch(/nothing to export/);
      await fill(4);
      const deadline = Date.now() + 5_000;
      while ((await segments(gw.dataDir)).includes('audit-000001.jsonl') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));

      const tail = await runCli(['audit', 'verify', gw.dataDir]);
      expect(tail.code).toBe(0);
      const note = /note: events 1–(\d+) were deleted by retention .* verified .* must end with hash ([0-9a-f]{64})/.exec(tail.stderr);
      expect(note, tail.stderr).not.toBeNull();
      const head = await runCli(['audit', 'verify', dest]);
      expect(head.stdout).toMatch(new RegExp(`^ok ${note![1]} events`));
      expect((await runCli(['audit', 'search', gw.dataDir, '--type', 'audit.pruned', '--json'])).stdout).toContain(`"throughHash":"${note![2]}"`);
    } finally {
      await gw.close();
      await upstream.stop();
    }
  });
});
