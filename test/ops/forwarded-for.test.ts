import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientAddress } from '../../src/proxy/client-address.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { TEST_POLICIES } from '../helpers/policies.js';
import { token } from '../helpers/tokens.js';
import { startUpstreamProcess, type CountingUpstream } from '../helpers/upstream.js';

const INVOKE = '/adminapi/beta/contoso.onmicrosoft.com/InvokeCommand';

const withSettings = (extra: string): string => TEST_POLICIES.replace('settings:\n', `settings:\n${extra}`);

async function auditEvents(gw: TestGateway): Promise<Array<Record<string, unknown>>> {
  return (await readFile(gw.audit.path, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function blockedCall(gw: TestGateway, headers: Record<string, string>): Promise<number> {
  const res = await fetch(gw.proxyUrl + INVOKE, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${await token('eve@contoso.com')}`, ...headers },
    body: JSON.stringify({ CmdletInput: { CmdletName: 'New-JournalRule', Parameters: { Name: headers['x-forwarded-for'] ?? 'none' } } }),
  });
  await res.arrayBuffer();
  return res.status;
}

async function lastBlockedRemote(gw: TestGateway): Promise<unknown> {
  return (await auditEvents(gw)).filter((e) => e['type'] === 'task.blocked').at(-1)?.['remote'];
}

describe('X-Forwarded-For names the audited client only from settings.trustedProxies', () => {
  let upstream: CountingUpstream;
  const gateways: TestGateway[] = [];
  beforeAll(async () => {
    upstream = await startUpstreamProcess();
  });
  afterAll(async () => {
    for (const gw of gateways) await gw.close();
    await upstream?.stop();
  });

  it('without trustedProxies the peer is recorded, whatever the header says', async () => {
    const gw = await startTestGateway({ policies: TEST_POLICIES, upstreamUrl: upstream.url });
    gateways.push(gw);
    expect(await blockedCall(gw, { 'x-forwarded-for': '203.0.113.7' })).toBe(403);
    expect(await lastBlockedRemote(gw)).toBe('127.0.0.1');
  });

  it('from a trusted peer, the rightmost untrusted address is recorded, on the proxy and on the control API', async () => {
    const gw = await startTestGateway({ policies: withSettings('  trustedProxies: [127.0.0.1, 10.0.0.0/8]\n'), upstreamUrl: upstream.url });
    gateways.push(gw);
    // The client forged the leftmost entry; the balancer (10.1.2.3) appended what it saw.
    expect(await blockedCall(gw, { 'x-forwarded-for': '198.51.100.1, 203.0.113.7, 10.1.2.3' })).toBe(403);
    expect(await lastBlockedRemote(gw)).toBe('203.0.113.7');
    expect(await blockedCall(gw, {})).toBe(403);
    expect(await lastBlockedRemote(gw)).toBe('127.0.0.1');

    const res = await fetch(gw.controlUrl + '/api/requests', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${await token('eve@contoso.com')}`, 'x-forwarded-for': '203.0.113.9' },
      body: JSON.stringify({ task: 'New-JournalRule', reason: 'change 42' }),
    });
    expect(res.status).toBe(201);
    expect((await auditEvents(gw)).filter((e) => e['type'] === 'request.created').at(-1)?.['remote']).toBe('203.0.113.9');
  });

  it('a peer outside trustedProxies cannot name another client', async () => {
    const gw = await startTestGateway({ policies: withSettings('  trustedProxies: [10.0.0.0/8]\n'), upstreamUrl: upstream.url });
    gateways.push(gw);
    expect(await blockedCall(gw, { 'x-forwarded-for': '203.0.113.7' })).toBe(403);
    expect(await lastBlockedRemote(gw)).toBe('127.0.0.1');
  });

  it('a trustedProxies entry that is not an address or CIDR block is a load error', async () => {
    await expect(startTestGateway({ policies: withSettings('  trustedProxies: [10.0.0.0/33]\n'), upstreamUrl: upstream.url })).rejects.toThrow(/trustedProxies/);
  });
});

describe('clientAddress', () => {
  const trusted = ['10.0.0.0/8', '127.0.0.1', 'fd00::/8'];
  it.each([
    ['127.0.0.1', '1.2.3.4', '1.2.3.4'],
    ['::ffff:127.0.0.1', '1.2.3.4', '1.2.3.4'],
    ['127.0.0.1', '9.9.9.9, 1.2.3.4, 10.0.0.5', '1.2.3.4'],
    ['127.0.0.1', '10.0.0.6, 10.0.0.5', '10.0.0.6'],
    ['127.0.0.1', 'garbage, 10.0.0.5', '10.0.0.5'],
    ['127.0.0.1', '1.2.3.4:5555', '1.2.3.4'],
    ['127.0.0.1', '[2001:db8::1]:443, fd00::1', '2001:db8::1'],
    ['192.0.2.1', '1.2.3.4', '192.0.2.1'],
  ])('peer %s, X-Forwarded-For %s: %s', (peer, xff, want) => {
    expect(clientAddress(peer, xff, trusted)).toBe(want);
  });
});
