import { afterAll, beforeAll, expect, it } from 'vitest';
import { chromium, type Browser } from 'playwright-core';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { api, invoke } from '../helpers/http.js';
import { TEST_POLICIES } from '../helpers/policies.js';
import { runCli } from '../helpers/process.js';
import { token } from '../helpers/tokens.js';
import { startUpstreamProcess, type CountingUpstream } from '../helpers/upstream.js';

const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';
let upstream: CountingUpstream;
let gw: TestGateway;
let browser: Browser;

beforeAll(async () => {
  upstream = await startUpstreamProcess();
  gw = await startTestGateway({ policies: TEST_POLICIES, upstreamUrl: upstream.url });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});
afterAll(async () => {
  await browser?.close();
  await gw?.close();
  await upstream?.stop();
});

it('an approver signs in on the page, sees the pending request, approves it, and the call goes through', async () => {
  const eve = await token('eve@contoso.com');
  const hostile = '<img src=x onerror="window.__pwned=1">';
  const created = await api(gw.controlUrl, 'POST', '/api/requests', eve, { task: 'New-JournalRule', reason: `CHG-7 ${hostile}` });
  expect((await invoke(gw.proxyUrl, 'New-JournalRule', {}, eve)).status).toBe(403);

  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  await page.goto(`${gw.controlUrl}/`);
  expect(page.url()).toBe(`${gw.controlUrl}/ui`);
  await page.fill('#token', await token('carol@contoso.com'));
  await page.click('button[type=submit]');

  const row = page.locator(`tr[data-id="${created.body.id}"]`);
  await row.waitFor();
  expect(await row.textContent()).toContain('eve@contoso.com');
  expect(await row.textContent()).toContain(hostile); // shown as text, not markup
  expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
  expect(await page.locator('#who').textContent()).toBe('carol@contoso.com');

  await page.screenshot({ path: `${gw.dataDir}/ui-pending.png` });
  expect(await page.locator('#login').isVisible()).toBe(false);
  await row.locator('button.approve').click();
  await page.locator('#message', { hasText: 'is now approved' }).waitFor();
  await page.locator('#rows', { hasText: 'no pending requests' }).waitFor();
  expect(await page.locator('#message').textContent()).toContain('is now approved');

  expect((await api(gw.controlUrl, 'GET', `/api/requests/${created.body.id}`, eve)).body.status).toBe('approved');
  expect((await invoke(gw.proxyUrl, 'New-JournalRule', {}, eve)).status).toBe(200);
  expect(await upstream.count('New-JournalRule')).toBe(1);
  expect(errors, errors.join('\n')).toEqual([]);
});

it('the page refuses what the API refuses: a requester cannot approve their own request there either', async () => {
  const bob = await token('bob@contoso.com');
  const created = await api(gw.controlUrl, 'POST', '/api/requests', bob, { role: 'Journaling', reason: 'rotation' });
  const page = await browser.newPage();
  await page.goto(`${gw.controlUrl}/ui`);
  await page.fill('#token', bob);
  await page.click('button[type=submit]');
  const row = page.locator(`tr[data-id="${created.body.id}"]`);
  await row.waitFor();
  await row.locator('button.approve').click();
  await page.locator('#message', { hasText: 'approve failed: you cannot approve or deny your own request' }).waitFor();
  expect((await api(gw.controlUrl, 'GET', `/api/requests/${created.body.id}`, bob)).body.status).toBe('pending');
});

it('a long listing comes in pages: the API links the next one, the CLI follows them all, the page says more exist', async () => {
  // 201 pending Remove-Mailbox requests (20 per user at most), all for alice's group to decide.
  const ids: string[] = [];
  for (let u = 0; ids.length < 201; u++) {
    const who = await token(`leaver-${u}@contoso.com`);
    for (let i = 0; i < 20 && ids.length < 201; i++) {
      const r = await api(gw.controlUrl, 'POST', '/api/requests', who, { task: 'Remove-Mailbox', reason: `leaver ${ids.length}` });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      ids.push(r.body.id);
    }
  }
  const alice = await token('alice@contoso.com');
  const all = await api(gw.controlUrl, 'GET', '/api/requests?status=pending', alice);
  const pending = (all.body as Array<{ id: string }>).map((r) => r.id);
  expect(pending).toEqual(expect.arrayContaining(ids));
  const res = await fetch(`${gw.controlUrl}/api/requests?status=pending&limit=200`, { headers: { authorization: `Bearer ${alice}` } });
  const first = (await res.json()) as Array<{ id: string }>;
  expect(first.map((r) => r.id)).toEqual(pending.slice(0, 200));
  const link = /<([^>]+)>; rel="next"/.exec(res.headers.get('link') ?? '')?.[1];
  expect(link).toBe(`/api/requests?status=pending&limit=200&after=${pending[199]}`);
  const second = await fetch(`${gw.controlUrl}${link}`, { headers: { authorization: `Bearer ${alice}` } });
  expect(((await second.json()) as Array<{ id: string }>).map((r) => r.id)).toEqual(pending.slice(200));
  expect(second.headers.get('link')).toBeNull();
  const bad = await api(gw.controlUrl, 'GET', '/api/requests?after=no-such-id', alice);
  expect([bad.status, bad.body.error.field]).toEqual([400, 'after']);

  const cli = await runCli(['requests', '--status', 'pending', '--json', '--server', gw.controlUrl], { PAMGATE_TOKEN: alice });
  expect(cli.code, cli.stderr).toBe(0);
  expect((JSON.parse(cli.stdout) as Array<{ id: string }>).map((r) => r.id)).toEqual(pending);

  const page = await browser.newPage();
  await page.goto(`${gw.controlUrl}/ui`);
  await page.fill('#token', alice);
  await page.click('button[type=submit]');
  await page.locator('#more').waitFor();
  expect(await page.locator('#rows tr[data-id]').count()).toBe(200);
  expect(await page.locator('#more').textContent()).toContain('showing the oldest 200 pending requests; more exist');
});

it('serves the page with a strict content security policy', async () => {
  const res = await fetch(`${gw.controlUrl}/ui`);
  expect(res.headers.get('content-security-policy')).toContain("script-src 'self'");
  expect(res.headers.get('x-content-type-options')).toBe('nosniff');
});
