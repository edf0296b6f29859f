import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { tempDir } from '../helpers/gateway.js';
import { api, invoke } from '../helpers/http.js';
import { TEST_POLICIES } from '../helpers/policies.js';
import { spawnGateway, type GatewayProcess } from '../helpers/process.js';
import { TEST_SECRET, token } from '../helpers/tokens.js';
import { startUpstreamProcess, type CountingUpstream } from '../helpers/upstream.js';

let upstream: CountingUpstream;
let env: NodeJS.ProcessEnv;
const running: GatewayProcess[] = [];

beforeAll(async () => {
  upstream = await startUpstreamProcess();
  const dir = await tempDir();
  await writeFile(join(dir, 'policies.yaml'), TEST_POLICIES);
  env = { PAMGATE_CONFIG: join(dir, 'policies.yaml'), PAMGATE_DATA_DIR: join(dir, 'data'), UPSTREAM_URL: upstream.url, PAMGATE_JWT_SECRET: TEST_SECRET };
});
afterAll(async () => {
  for (const g of running) await g.stop('SIGKILL');
  await upstream?.stop();
});

it('pending requests and active grants survive a restart of the gateway process; SIGTERM exits 0', async () => {
  const eve = await token('eve@contoso.com');
  const carol = await token('carol@contoso.com');
  const first = await spawnGateway(env);
  running.push(first);
  const granted = await api(first.controlUrl, 'POST', '/api/requests', eve, { task: 'New-JournalRule', reason: 'r' });
  await api(first.controlUrl, 'POST', `/api/requests/${granted.body.id}/approve`, carol, {});
  const pending = await api(first.controlUrl, 'POST', '/api/requests', eve, { task: 'Set-JournalRule', reason: 'r' });
  expect((await invoke(first.proxyUrl, 'New-JournalRule', {}, eve)).status).toBe(200);
  expect(await first.stop('SIGTERM')).toBe(0);

  const second = await spawnGateway(env);
  running.push(second);
  expect((await invoke(second.proxyUrl, 'New-JournalRule', {}, eve)).status).toBe(200);
  expect(await upstream.count('New-JournalRule')).toBe(2);
  const still = await api(second.controlUrl, 'GET', `/api/requests/${pending.body.id}`, eve);
  expect(still.body.status).toBe('pending');
  const alice = await token('alice@contoso.com'); // Set-JournalRule falls under journaling-role: default approvers
  expect((await api(second.controlUrl, 'POST', `/api/requests/${pending.body.id}/approve`, alice, {})).body.status).toBe('approved');
  expect((await invoke(second.proxyUrl, 'Set-JournalRule', {}, eve)).status).toBe(200);
  expect(await second.stop()).toBe(0);
});
