import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, tempDir, type TestGateway } from '../helpers/gateway.js';
import { TEST_POLICIES } from '../helpers/policies.js';
import { freePort, spawnGatewayAt } from '../helpers/process.js';
import { TEST_SECRET, token } from '../helpers/tokens.js';
import { startUpstreamProcess, type CountingUpstream } from '../helpers/upstream.js';

const INVOKE = '/adminapi/beta/contoso.onmicrosoft.com/InvokeCommand';
type Line = Record<string, any>;

async function call(url: string, cmdlet: string, tok?: string, raw?: string): Promise<{ status: number; rid: string | null }> {
  const res = await fetch(url + INVOKE, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(tok ? { authorization: `Bearer ${tok}` } : {}) },
    body: raw ?? JSON.stringify({ CmdletInput: { CmdletName: cmdlet, Parameters: {} } }),
  });
  await res.arrayBuffer();
  return { status: res.status, rid: res.headers.get('x-request-id') };
}

describe('log lines an on-call engineer can use', () => {
  let upstream: CountingUpstream;
  let gw: TestGateway;
  const lines: Line[] = [];
  const find = (pred: (l: Line) => boolean): Line | undefined => lines.find(pred);

  beforeAll(async () => {
    upstream = await startUpstreamProcess();
    const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Line) });
    gw = await startTestGateway({ policies: TEST_POLICIES, upstreamUrl: upstream.url, log });
  });
  afterAll(async () => {
    await gw?.close();
    await upstream?.stop();
  });

  it('start-up summary: listeners, upstreams, policy count and hash, store, audit path, mode, TLS', () => {
    const started = find((l) => l.msg === 'pamgate started');
    expect(started).toMatchObject({
      proxyUrl: gw.proxyUrl,
      controlUrl: gw.controlUrl,
      tls: false,
      upstreams: [{ url: upstream.url, demo: false, reachable: true }],
      policies: 6,
      mode: 'enforce',
      store: 'embedded',
      audit: gw.audit.path,
    });
    expect(started!['policyHash']).toMatch(/^[0-9a-f]{64}$/);
  });

  it('a blocked decision: the client gets x-request-id and the info line carries it, with actor, task and policy', async () => {
    const r = await call(gw.proxyUrl, 'New-JournalRule', await token('eve@contoso.com'));
    expect(r.status).toBe(403);
    expect(r.rid).toMatch(/^[0-9a-f-]{36}$/);
    const line = find((l) => l.rid === r.rid);
    expect(line).toMatchObject({ level: 30, msg: 'gated request blocked', actor: 'eve@contoso.com', action: 'block', status: 403, tasks: [{ task: 'New-JournalRule', policy: 'journal-rules', verdict: 'ungranted' }] });
  });

  it('a forwarded gated call: the upstream answer carries x-request-id, and the line names the access request', async () => {
    const search = await token('vic@contoso.com');
    const created = await fetch(gw.controlUrl + '/api/requests', { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${search}` }, body: JSON.stringify({ task: 'Search-Mailbox', reason: 'case 9' }) });
    const { id } = (await created.json()) as { id: string };
    const r = await call(gw.proxyUrl, 'Search-Mailbox', search);
    expect(r.status).toBe(200);
    expect(find((l) => l.rid === r.rid)).toMatchObject({ msg: 'gated request forwarded', actor: 'vic@contoso.com', tasks: [{ task: 'Search-Mailbox', accessRequest: id, verdict: 'granted' }] });
  });

  it('a refusal (unreadable body on a command route) is logged with its request id', async () => {
    const r = await call(gw.proxyUrl, '', undefined, '{"CmdletInput": {"CmdletName": ');
    expect(r.status).toBe(400);
    expect(find((l) => l.rid === r.rid)).toMatchObject({ level: 30, msg: 'request refused', status: 400 });
  });

  it('an upstream failure is a warning naming the upstream and the request id', async () => {
    await upstream.stop();
    const r = await call(gw.proxyUrl, 'New-JournalRule', await token('svc-backup@contoso.com'));
    expect(r.status).toBe(502);
    expect(find((l) => l.rid === r.rid && l.msg.startsWith('upstream request failed'))).toMatchObject({ level: 40, upstream: upstream.url });
    upstream = await startUpstreamProcess();
  });

  it('shutdown is logged', async () => {
    await gw.close();
    expect(find((l) => l.msg.startsWith('pamgate stopping'))).toBeDefined();
    expect(find((l) => l.msg === 'pamgate stopped')).toBeDefined();
  });
});

describe('LOG_LEVEL', () => {
  it('debug adds a line per ungated request; an unknown level is refused in one line', async () => {
    const upstream = await startUpstreamProcess();
    const dir = await tempDir();
    await writeFile(join(dir, 'policies.yaml'), TEST_POLICIES);
    const env = { ...process.env, HOST: '127.0.0.1', PAMGATE_CONFIG: join(dir, 'policies.yaml'), PAMGATE_DATA_DIR: join(dir, 'data'), PAMGATE_JWT_SECRET: TEST_SECRET, UPSTREAM_URL: upstream.url };
    const gw = await spawnGatewayAt(await freePort(), await freePort(), { ...env, LOG_LEVEL: 'debug' });
    try {
      expect((await call(gw.proxyUrl, 'Get-Mailbox')).status).toBe(200);
      for (let i = 0; i < 50 && !gw.output().includes('ungated request forwarded'); i++) await new Promise((r) => setTimeout(r, 20));
      expect(gw.output()).toContain('"msg":"ungated request forwarded"');
      expect(await gw.stop()).toBe(0);
      expect(gw.output()).toContain('"msg":"pamgate stopped"');
    } finally {
      await gw.stop();
      await upstream.stop();
    }
    const { runCli } = await import('../helpers/process.js');
    const bad = await runCli(['serve'], { ...env, LOG_LEVEL: 'loud' });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toBe('pamgate: LOG_LEVEL "loud" is not a level: use trace, debug, info, warn, error, fatal or silent\n');
  });
});
