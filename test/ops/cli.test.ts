import { appendFile, readFile, writeFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMMANDS } from '../../src/cli/usage.js';
import { startTestGateway, tempDir, type TestGateway } from '../helpers/gateway.js';
import { invoke } from '../helpers/http.js';
import { TEST_POLICIES } from '../helpers/policies.js';
import { CLI, runCli } from '../helpers/process.js';
import { token } from '../helpers/tokens.js';
import { startUpstreamProcess, type CountingUpstream } from '../helpers/upstream.js';

const CLASS_OR_STACK = /\b[A-Z][A-Za-z]*Error\b|\n\s+at |\bat [^ ]+:\d+:\d+/;

/** Exit non-zero, one line `pamgate: …` on stderr, no stack and no error class. */
function expectOneLineError(r: { code: number; stderr: string }, pattern: RegExp): void {
  expect(r.code).not.toBe(0);
  expect(r.stderr).toMatch(/^pamgate: [^\n]+\n$/);
  expect(r.stderr).toMatch(pattern);
  expect(r.stderr).not.toMatch(CLASS_OR_STACK);
}

describe('pamgate --version and help', () => {
  it('--version prints pamgate X.Y.Z (the package version)', async () => {
    const pkg = JSON.parse(await readFile('package.json', 'utf8')) as { version: string };
    for (const flag of ['--version', '-V']) {
      const r = await runCli([flag]);
      expect(r).toMatchObject({ code: 0, stdout: `pamgate ${pkg.version}\n`, stderr: '' });
    }
  });

  it('every command has its own usage, from `pamgate help CMD` and from `CMD --help`', async () => {
    const global = (await runCli(['help'])).stdout;
    for (const name of Object.keys(COMMANDS)) {
      const viaHelp = await runCli(['help', name]);
      const viaFlag = await runCli([name, '--help']);
      expect(viaHelp.code).toBe(0);
      expect(viaHelp.stdout).toMatch(new RegExp(`^usage: pamgate ${name}\\b`));
      expect(viaHelp.stdout).not.toBe(global);
      expect(viaFlag.stdout).toBe(viaHelp.stdout);
    }
    expect((await runCli(['help', 'audit'])).stdout).toContain('tail');
  });

  it('the global usage lists every command', async () => {
    const r = await runCli(['--help']);
    expect(r.code).toBe(0);
    for (const name of Object.keys(COMMANDS)) expect(r.stdout).toMatch(new RegExp(`^  ${name} `, 'm'));
  });
});

describe('CLI errors: one line, no stack trace, no class name', () => {
  it.each([
    [['frobnicate'], /unknown command "frobnicate" \(see pamgate help\)/],
    [['help', 'frobnicate'], /unknown command "frobnicate"/],
    [['requests', '--frob'], /Unknown option '--frob'.*\(see pamgate help requests\)/],
    [['token', '--user', 'a@b.c', '--hours', 'lots', '--config', 'policies.yaml'], /--hours must be a number of hours/],
    [['audit', 'search', 'test/fixtures', '--since', 'yesterday-ish'], /--since must be a date/],
    [['audit', 'search', '/nonexistent/audit.jsonl'], /no audit file at \/nonexistent\/audit\.jsonl/],
    [['audit', 'frob'], /unknown audit command "frob"/],
    [['explain', '--config', 'policies.yaml'], /explain needs --user and --task/],
    [['request', '--task', 'X', '--reason', 'r', '--duration', 'two'], /--duration must be a positive number of hours, got "two"/],
    [['approve'], /approve needs a request id/],
  ])('pamgate %j', async (args, pattern) => {
    expectOneLineError(await runCli(args as string[], { PAMGATE_TOKEN: 'x', PAMGATE_SERVER: 'http://127.0.0.1:9' }), pattern);
  });
});

describe('client verbs against a gateway', () => {
  let upstream: CountingUpstream;
  let gw: TestGateway;
  let env: (user: string) => Promise<Record<string, string>>;
  beforeAll(async () => {
    upstream = await startUpstreamProcess();
    gw = await startTestGateway({ policies: TEST_POLICIES, upstreamUrl: upstream.url });
    env = async (user) => ({ PAMGATE_TOKEN: await token(user), PAMGATE_SERVER: gw.controlUrl });
  });
  afterAll(async () => {
    await gw?.close();
    await upstream?.stop();
  });

  it('a duration over the maximum is refused, naming the maximum', async () => {
    const r = await runCli(['request', '--task', 'New-JournalRule', '--reason', 'change 7', '--duration', '48'], await env('eve@contoso.com'));
    expectOneLineError(r, /^pamgate: 400: durationHours: at most 8 hours under policy "journal-rules" \(asked for 48\)\n$/);
  });

  it('approve names the approver and what remains; deny names who denied', async () => {
    const created = JSON.parse((await runCli(['request', '--task', 'Remove-Mailbox', '--reason', 'leaver', '--json'], await env('eve@contoso.com'))).stdout) as { id: string };
    const first = await runCli(['approve', created.id], await env('alice@contoso.com'));
    expect(first.stdout).toBe(`approved by alice@contoso.com: request ${created.id} (Remove-Mailbox, requested by eve@contoso.com, policy mailbox-removal) has 1 of 2 approvals; 1 more needed from pam-approvers (still pending)\n`);
    const second = await runCli(['approve', created.id], await env('bob@contoso.com'));
    expect(second.stdout).toMatch(new RegExp(`^approved by bob@contoso\\.com: request ${created.id} \\(Remove-Mailbox, requested by eve@contoso\\.com, policy mailbox-removal\\) is now approved \\(2 of 2 approvals\\); the grant runs until \\d{4}-`));

    const other = JSON.parse((await runCli(['request', '--task', 'New-JournalRule', '--reason', 'x', '--json'], await env('eve@contoso.com'))).stdout) as { id: string };
    const denied = await runCli(['deny', other.id, '--comment', 'no ticket'], await env('carol@contoso.com'));
    expect(denied.stdout).toBe(`denied by carol@contoso.com: request ${other.id} (New-JournalRule, requested by eve@contoso.com, policy journal-rules) is denied (final)\n`);
  });

  it('audit search prints a table by default (time, type, actor, task, request) and JSON lines with --json', async () => {
    await invoke(gw.proxyUrl, 'New-JournalRule', {}, await token('mallory@contoso.com'));
    const table = await runCli(['audit', 'search', gw.dataDir, '--actor', 'mallory@contoso.com']);
    expect(table.code).toBe(0);
    const [head, row, ...more] = table.stdout.trimEnd().split('\n');
    expect(head).toMatch(/^TIME\s+TYPE\s+ACTOR\s+TASK\s+REQUEST$/);
    expect(row).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z\s+task\.blocked\s+mallory@contoso\.com\s+New-JournalRule\s+-$/);
    expect(more).toEqual([]);
    const json = await runCli(['audit', 'search', gw.dataDir, '--actor', 'mallory@contoso.com', '--json']);
    expect(JSON.parse(json.stdout)).toMatchObject({ type: 'task.blocked', actor: 'mallory@contoso.com' });
  });

  it('audit tail -f prints the last events, then each new one as it is written', async () => {
    const child = spawn(process.execPath, [CLI, 'audit', 'tail', '-f', '-n', '1', '--json', gw.dataDir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const waitFor = async (pred: () => boolean): Promise<void> => {
      for (let i = 0; i < 100 && !pred(); i++) await new Promise((r) => setTimeout(r, 50));
    };
    try {
      await waitFor(() => out.includes('\n'));
      expect(out.trim().split('\n')).toHaveLength(1);
      await invoke(gw.proxyUrl, 'Set-TransportRule', {}, await token('trudy@contoso.com'));
      await waitFor(() => out.includes('trudy@contoso.com'));
      const last = JSON.parse(out.trim().split('\n').at(-1)!) as Record<string, unknown>;
      expect(last).toMatchObject({ type: 'task.blocked', actor: 'trudy@contoso.com', task: 'Set-TransportRule' });
    } finally {
      child.kill('SIGTERM');
    }
  });

  it('`pamgate requests` starts well under a second (client verbs load no server modules)', async () => {
    const e = await env('eve@contoso.com');
    await runCli(['requests'], e); // warm the file cache
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      const r = await runCli(['requests'], e);
      times.push(performance.now() - t0);
      expect(r.code).toBe(0);
    }
    times.sort((a, b) => a - b);
    expect(times[1]).toBeLessThan(500);
  });
});

describe('audit tail across a rotation', () => {
  it('a replaced live file is read from its start', async () => {
    const dir = await tempDir();
    const file = join(dir, 'audit.jsonl');
    const ev = (seq: number) => JSON.stringify({ seq, time: new Date().toISOString(), type: 't.x', actor: `u${seq}@c.com`, task: null, requestId: null }) + '\n';
    await writeFile(file, ev(1) + ev(2));
    const child = spawn(process.execPath, [CLI, 'audit', 'tail', '-f', '--json', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const waitFor = async (pred: () => boolean): Promise<void> => {
      for (let i = 0; i < 100 && !pred(); i++) await new Promise((r) => setTimeout(r, 50));
    };
    try {
      await waitFor(() => out.includes('u2@'));
      await appendFile(file, ev(3));
      await waitFor(() => out.includes('u3@'));
      await writeFile(file + '.new', ev(4));
      const { rename } = await import('node:fs/promises');
      await rename(file + '.new', file);
      await waitFor(() => out.includes('u4@'));
      expect(out.trim().split('\n').map((l) => (JSON.parse(l) as { seq: number }).seq)).toEqual([1, 2, 3, 4]);
    } finally {
      child.kill('SIGTERM');
    }
  });
});
