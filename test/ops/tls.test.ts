import { copyFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/gateway.js';
import { TEST_POLICIES } from '../helpers/policies.js';
import { freePort, spawnGatewayAt, type GatewayProcess } from '../helpers/process.js';
import { CERT_A, CERT_B, fingerprintOf, httpsRequest } from '../helpers/tls.js';
import { TEST_SECRET, token } from '../helpers/tokens.js';
import { startUpstreamProcess, type CountingUpstream } from '../helpers/upstream.js';

const INVOKE = '/adminapi/beta/contoso.onmicrosoft.com/InvokeCommand';
const body = (cmdlet: string): string => JSON.stringify({ CmdletInput: { CmdletName: cmdlet, Parameters: {} } });

describe('TLS on both listeners (PAMGATE_TLS_CERT, PAMGATE_TLS_KEY)', () => {
  let upstream: CountingUpstream;
  let gw: GatewayProcess;
  let dir: string;
  let proxyUrl: string;
  let controlUrl: string;
  const ca = [CERT_A.cert, CERT_B.cert];

  beforeAll(async () => {
    upstream = await startUpstreamProcess();
    dir = await tempDir();
    await copyFile(CERT_A.cert, join(dir, 'tls.crt'));
    await copyFile(CERT_A.key, join(dir, 'tls.key'));
    await writeFile(join(dir, 'policies.yaml'), TEST_POLICIES);
    const [port, adminPort] = [await freePort(), await freePort()];
    gw = await spawnGatewayAt(port, adminPort, {
      ...process.env,
      HOST: '127.0.0.1',
      PAMGATE_CONFIG: join(dir, 'policies.yaml'),
      PAMGATE_DATA_DIR: join(dir, 'data'),
      PAMGATE_JWT_SECRET: TEST_SECRET,
      UPSTREAM_URL: upstream.url,
      PAMGATE_TLS_CERT: join(dir, 'tls.crt'),
      PAMGATE_TLS_KEY: join(dir, 'tls.key'),
    });
    proxyUrl = `https://127.0.0.1:${port}`;
    controlUrl = `https://127.0.0.1:${adminPort}`;
  });
  afterAll(async () => {
    await gw?.stop();
    await upstream?.stop();
  });

  it('the proxy speaks HTTPS: an ungated call reaches the upstream, a gated one is refused', async () => {
    const open = await httpsRequest(proxyUrl + INVOKE, { method: 'POST', headers: { 'content-type': 'application/json' }, body: body('Get-Mailbox'), caFiles: ca });
    expect(open.status).toBe(200);
    expect(open.fingerprint).toBe(fingerprintOf(CERT_A.cert));
    const gated = await httpsRequest(proxyUrl + INVOKE, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${await token('eve@contoso.com')}` }, body: body('New-JournalRule'), caFiles: ca });
    expect(gated.status).toBe(403);
    expect(JSON.parse(gated.body).error.requestUrl).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/api\/requests$/);
    expect(await upstream.count('New-JournalRule')).toBe(0);
  });

  it('the control listener speaks HTTPS', async () => {
    const health = await httpsRequest(controlUrl + '/healthz', { caFiles: ca });
    expect(health.status).toBe(200);
    expect(health.fingerprint).toBe(fingerprintOf(CERT_A.cert));
    const list = await httpsRequest(controlUrl + '/api/requests', { headers: { authorization: `Bearer ${await token('eve@contoso.com')}` }, caFiles: ca });
    expect(list.status).toBe(200);
  });

  it('plain HTTP is not served', async () => {
    await expect(fetch(proxyUrl.replace('https:', 'http:') + INVOKE, { method: 'POST', body: body('Get-Mailbox') }).then((r) => r.status)).rejects.toThrow();
  });

  it('SIGHUP re-reads the certificate on both listeners; a broken pair keeps the old one', async () => {
    await copyFile(CERT_B.cert, join(dir, 'tls.crt'));
    await copyFile(CERT_B.key, join(dir, 'tls.key'));
    gw.child.kill('SIGHUP');
    const want = fingerprintOf(CERT_B.cert);
    for (let i = 0; i < 100; i++) {
      if ((await httpsRequest(controlUrl + '/healthz', { caFiles: ca })).fingerprint === want) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect((await httpsRequest(controlUrl + '/healthz', { caFiles: ca })).fingerprint).toBe(want);
    expect((await httpsRequest(proxyUrl + INVOKE, { method: 'POST', body: body('Get-Mailbox'), caFiles: ca })).fingerprint).toBe(want);

    // A certificate that does not match its key: refused, logged, and the listeners keep serving B.
    await copyFile(CERT_A.cert, join(dir, 'tls.crt'));
    gw.child.kill('SIGHUP');
    for (let i = 0; i < 100 && !gw.output().includes('TLS certificate not reloaded'); i++) await new Promise((r) => setTimeout(r, 50));
    expect(gw.output()).toContain('TLS certificate not reloaded');
    expect((await httpsRequest(controlUrl + '/healthz', { caFiles: ca })).fingerprint).toBe(want);
    expect((await httpsRequest(proxyUrl + INVOKE, { method: 'POST', body: body('Get-Mailbox'), caFiles: ca })).status).toBe(200);
  });
});
