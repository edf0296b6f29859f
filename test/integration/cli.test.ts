import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, tempDir } from '../helpers/gateway.js';
import { invoke } from '../helpers/http.js';
import { TEST_POLICIES } from '../helpers/policies.js';
import { runCli, spawnGateway } from '../helpers/process.js';
import { TEST_SECRET, token } from '../helpers/tokens.js';
import { startUpstreamProcess, type CountingUpstream } from '../helpers/upstream.js';

const THREE_ERRORS = `version: 1
settings:
  mode: enforcing
groups:
  approvers: [alice@contoso.com]
policies:
  - id: Journal_Rules
    task: New-JournalRule
    approverGroup: approvers
  - id: other
    task: Set-JournalRule
    approverGroup: approvers
    approvals: many
`;

describe('pamgate check', () => {
  it('prints one file:line:col line per error and exits 1', async () => {
    const dir = await tempDir();
    const file = join(dir, 'bad.yaml');
    await writeFile(file, THREE_ERRORS);
    const r = await runCli(['check', file]);
    expect(r.code).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(3);
    for (const line of lines) expect(line).toMatch(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+: `));
    expect(lines.map((l) => l.split(':').slice(1, 3).join(':'))).toEqual(['3:9', '7:9', '13:16']);
  });

  it('accepts the sample policies.yaml', async () => {
    const r = await runCli(['check', 'policies.yaml']);
    expect(r.stdout).toMatch(/ok, \d+ policies/);
    expect(r.code).toBe(0);
  });

  it('the gateway refuses to start on an invalid file, naming the errors', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'bad.yaml'), THREE_ERRORS);
    await expect(spawnGateway({ PAMGATE_CONFIG: join(dir, 'bad.yaml'), PAMGATE_DATA_DIR: join(dir, 'data'), UPSTREAM_URL: 'http://127.0.0.1:9' })).rejects.toThrow(
      /exited with 1[\s\S]*bad\.yaml:3:9:[\s\S]*refusing to start/,
    );
  });
});

describe('pamgate explain', () => {
  it('explains a gated and an ungated task', async () => {
    const gated = await runCli(['explain', '--config', 'policies.yaml', '--user', 'eve@contoso.com', '--task', 'Exchange\\New-JournalRule']);
    expect(gated.code).toBe(0);
    expect(gated.stdout).toContain('covered by: journal-rules');
    expect(gated.stdout).toContain('decision: BLOCK');
    const open = await runCli(['explain', '--config', 'policies.yaml', '--user', 'eve@contoso.com', '--task', 'Get-Mailbox']);
    expect(open.stdout).toContain('decision: FORWARD');
    const svc = await runCli(['explain', '--config', 'policies.yaml', '--user', 'svc-backup@contoso.com', '--task', 'New-JournalRule']);
    expect(svc.stdout).toContain('system account');
  });
});

describe('pamgate audit verify', () => {
  let upstream: CountingUpstream;
  let file: string;
  let original: string;

  beforeAll(async () => {
    upstream = await startUpstreamProcess();
    const gw = await startTestGateway({ policies: TEST_POLICIES, upstreamUrl: upstream.url });
    const eve = await token('eve@contoso.com');
    for (let i = 0; i < 5; i++) await invoke(gw.proxyUrl, 'New-JournalRule', { Name: `j${i}` }, eve);
    await invoke(gw.proxyUrl, 'Remove-Mailbox', {}, await token('svc-backup@contoso.com'));
    await gw.close();
    file = gw.audit.path;
    original = await readFile(file, 'utf8');
  });
  afterAll(() => upstream?.stop());

  const verifyWith = async (content: string) => {
    await writeFile(file, content);
    return runCli(['audit', 'verify', file]);
  };

  it('passes on a real run', async () => {
    const r = await verifyWith(original);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(`ok ${original.trim().split('\n').length} events`);
  });

  it('fails after a line is edited', async () => {
    const r = await verifyWith(original.replace('"actor":"eve@contoso.com"', '"actor":"bob@contoso.com"'));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/:3: hash mismatch/);
  });

  it('fails after a line is deleted', async () => {
    const lines = original.split('\n');
    lines.splice(3, 1);
    const r = await verifyWith(lines.join('\n'));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/:4: seq 5 expected 4/);
  });

  it('fails after two lines are swapped', async () => {
    const lines = original.split('\n');
    [lines[2], lines[3]] = [lines[3]!, lines[2]!];
    const r = await verifyWith(lines.join('\n'));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/:3: /);
  });

  it('fails after the file is truncated (mid-line or at a line boundary)', async () => {
    expect((await verifyWith(original.slice(0, original.length - 20))).code).not.toBe(0);
    const lines = original.trim().split('\n');
    const r = await verifyWith(lines.slice(0, -2).join('\n') + '\n');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/truncated/);
  });
});

describe('client verbs', () => {
  it('request, requests, approve, revoke with --json; failures exit non-zero with a message', async () => {
    const upstream = await startUpstreamProcess();
    const gw = await startTestGateway({ policies: TEST_POLICIES, upstreamUrl: upstream.url });
    try {
      const server = gw.controlUrl;
      const eve = { PAMGATE_TOKEN: await token('eve@contoso.com'), PAMGATE_SERVER: server };
      const created = await runCli(['request', '--task', 'New-JournalRule', '--reason', 'ticket 7', '--duration', '2', '--json'], eve);
      expect(created.code).toBe(0);
      const req = JSON.parse(created.stdout) as { id: string; status: string; durationHours: number };
      expect(req).toMatchObject({ status: 'pending', durationHours: 2 });

      const self = await runCli(['approve', req.id], eve);
      expect(self.code).not.toBe(0);
      expect(self.stderr).toMatch(/403: you cannot approve or deny your own request/);

      const carol = { PAMGATE_TOKEN: await token('carol@contoso.com'), PAMGATE_SERVER: server };
      const approved = await runCli(['approve', req.id, '--comment', 'fine'], carol);
      expect(approved.stdout).toBe(`approved by carol@contoso.com: request ${req.id} (New-JournalRule, requested by eve@contoso.com, policy journal-rules) is now approved (1 of 1 approvals); the grant runs until ${JSON.parse((await runCli(['requests', '--status', 'approved', '--json'], eve)).stdout)[0].expiresAt}\n`);
      const list = await runCli(['requests', '--status', 'approved', '--json'], eve);
      expect((JSON.parse(list.stdout) as Array<{ id: string }>).map((r) => r.id)).toContain(req.id);
      const revoked = await runCli(['revoke', req.id, '--json'], carol);
      expect(JSON.parse(revoked.stdout).status).toBe('revoked');

      const noToken = await runCli(['requests'], { PAMGATE_SERVER: server, PAMGATE_TOKEN: '' });
      expect(noToken.code).not.toBe(0);
      expect(noToken.stderr).toMatch(/PAMGATE_TOKEN/);
      const down = await runCli(['requests'], { PAMGATE_SERVER: 'http://127.0.0.1:9', PAMGATE_TOKEN: 'x' });
      expect(down.code).not.toBe(0);
      expect(down.stderr).toMatch(/cannot reach/);
    } finally {
      await gw.close();
      await upstream.stop();
    }
  });

  it('request prints why an over-limit input or a too-fast request was refused', async () => {
    const upstream = await startUpstreamProcess();
    const gw = await startTestGateway({ policies: TEST_POLICIES.replace('requestRateBurst: 100000', 'requestRateBurst: 1'), upstreamUrl: upstream.url });
    try {
      const eve = { PAMGATE_TOKEN: await token('eve@contoso.com'), PAMGATE_SERVER: gw.controlUrl };
      const long = await runCli(['request', '--task', 'New-JournalRule', '--reason', 'r'.repeat(1001)], eve);
      expect(long.code).not.toBe(0);
      expect(long.stderr).toMatch(/400: reason: at most 1000 characters/);
      const params = Array.from({ length: 9 }, (_, i) => ['--param', `P${i}=v`]).flat();
      const many = await runCli(['request', '--task', 'New-JournalRule', '--reason', 'ok', ...params], eve);
      expect(many.code).not.toBe(0);
      expect(many.stderr).toMatch(/400: parameters: at most 8 parameters that policy "journal-rules" has no rule for/);
      expect((await runCli(['request', '--task', 'New-JournalRule', '--reason', 'ok'], eve)).code).toBe(0);
      const fast = await runCli(['request', '--task', 'New-JournalRule', '--reason', 'again'], eve);
      expect(fast.code).not.toBe(0);
      expect(fast.stderr).toMatch(/429: you are filing requests too fast: at most 1 at once, then 60 an hour; try again in 60 s/);
    } finally {
      await gw.close();
      await upstream.stop();
    }
  });

  it('token mints an HS256 token the gateway accepts', async () => {
    const r = await runCli(['token', '--user', 'alice@contoso.com', '--config', 'policies.yaml'], { PAMGATE_JWT_SECRET: TEST_SECRET });
    expect(r.code).toBe(0);
    expect(r.stdout.split('.')).toHaveLength(3);
  });
});
