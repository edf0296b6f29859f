import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { invoke } from '../helpers/http.js';
import { TEST_POLICIES } from '../helpers/policies.js';
import { token } from '../helpers/tokens.js';
import { startUpstreamProcess, type CountingUpstream } from '../helpers/upstream.js';

const PATH = '/adminapi/beta/contoso.onmicrosoft.com/InvokeCommand';
let upstream: CountingUpstream;
beforeAll(async () => {
  upstream = await startUpstreamProcess();
});
afterAll(() => upstream?.stop());

async function events(gw: TestGateway): Promise<Array<Record<string, unknown>>> {
  return (await readFile(gw.audit.path, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function withGateway(settings: string, fn: (gw: TestGateway) => Promise<void>): Promise<void> {
  const gw = await startTestGateway({ policies: TEST_POLICIES.replace('settings:\n', `settings:\n${settings}`), upstreamUrl: upstream.url });
  try {
    await upstream.reset();
    await fn(gw);
  } finally {
    await gw.close();
  }
}

describe('settings.mode and settings.enabled', () => {
  it('report-only forwards a would-be block and audits it as task.reported', () =>
    withGateway('  mode: report-only\n', async (gw) => {
      expect((await invoke(gw.proxyUrl, 'New-JournalRule', {}, await token('eve@contoso.com'))).status).toBe(200);
      expect(await upstream.count('New-JournalRule')).toBe(1);
      expect((await events(gw)).at(-1)).toMatchObject({ type: 'task.reported', actor: 'eve@contoso.com', task: 'New-JournalRule', mode: 'report-only' });
    }));

  it('enabled: false forwards everything, unreadable bodies included, and still audits gated tasks', () =>
    withGateway('  enabled: false\n', async (gw) => {
      expect((await invoke(gw.proxyUrl, 'New-JournalRule', {})).status).toBe(200);
      expect((await events(gw)).at(-1)).toMatchObject({ type: 'task.reported', task: 'New-JournalRule', mode: 'disabled' });
      const garbled = await fetch(`${gw.proxyUrl}${PATH}`, { method: 'POST', body: '{"CmdletInput":{"CmdletName":"New-JournalRule","cmdletname":"x"}}' });
      expect(garbled.status).toBe(200); // forwarded: what the upstream made of it
      expect((await events(gw)).at(-1)).toMatchObject({ type: 'task.reported', mode: 'disabled', reason: expect.stringContaining('ambiguous') });
    }));

  it('enforce: an over-limit body on a command route is refused with 413 and audited first', () =>
    withGateway('  maxBodyBytes: 2048\n', async (gw) => {
      const big = JSON.stringify({ CmdletInput: { CmdletName: 'New-JournalRule', Parameters: { Comment: 'x'.repeat(4096) } } });
      const r = await fetch(`${gw.proxyUrl}${PATH}`, { method: 'POST', body: big });
      expect(r.status).toBe(413);
      expect((await events(gw)).at(-1)).toMatchObject({ type: 'task.blocked', reason: 'request body exceeds 2048 bytes' });
      expect(await upstream.executed()).toEqual({});
    }));
});

describe('an UPSTREAM_URL with a path', () => {
  it('classifies the path the upstream will see (its base path joined on), not only the client target', async () => {
    const gw = await startTestGateway({ policies: TEST_POLICIES, upstreamUrl: `${upstream.url}${PATH}` });
    try {
      await upstream.reset();
      const body = JSON.stringify({ CmdletInput: { CmdletName: 'New-JournalRule' } });
      const r = await fetch(`${gw.proxyUrl}/`, { method: 'POST', body });
      expect(r.status).toBe(401);
      expect(await upstream.executed()).toEqual({});
    } finally {
      await gw.close();
    }
  });
});
