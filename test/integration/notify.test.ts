import { readFile, rm } from 'node:fs/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { api } from '../helpers/http.js';
import { TEST_POLICIES } from '../helpers/policies.js';
import { startSmtpServer, type ReceivedMail } from '../helpers/smtp.js';
import { token } from '../helpers/tokens.js';
import { startUpstreamProcess, type CountingUpstream } from '../helpers/upstream.js';

let upstream: CountingUpstream;
let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
let gw: TestGateway;

beforeAll(async () => {
  upstream = await startUpstreamProcess();
  smtp = await startSmtpServer();
  gw = await startTestGateway({ policies: withNotify(smtp.port, '[0.2, 0.2]'), upstreamUrl: upstream.url });
});

function withNotify(port: number, retrySeconds: string): string {
  return TEST_POLICIES.replace('identity:', `notify:\n  smtp: smtp://127.0.0.1:${port}\n  from: pamgate@contoso.com\n  retrySeconds: ${retrySeconds}\nidentity:`);
}

async function auditOf(g: TestGateway): Promise<Array<Record<string, unknown>>> {
  return (await readFile(g.audit.path, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function eventually<T>(what: string, probe: () => Promise<T | undefined>, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const hit = await probe();
    if (hit !== undefined) return hit;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
afterAll(async () => {
  await gw?.close();
  await smtp?.stop();
  await upstream?.stop();
});

async function mailTo(address: string, subject: RegExp): Promise<ReceivedMail> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const hit = smtp.mails.find((m) => m.to.includes(address) && subject.test(m.subject));
    if (hit) return hit;
    if (Date.now() > deadline) throw new Error(`no mail to ${address} matching ${subject}; got ${JSON.stringify(smtp.mails.map((m) => [m.to, m.subject]))}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

it('approvers hear of a new request (not the requester); the requester hears of the decision', async () => {
  const created = await api(gw.controlUrl, 'POST', '/api/requests', await token('carol@contoso.com'), { task: 'New-JournalRule', reason: 'CHG-9 retention' });
  const id = created.body.id as string;
  const toDave = await mailTo('dave@contoso.com', /carol@contoso\.com requests New-JournalRule/);
  expect(toDave.to).toEqual(['dave@contoso.com']); // carol is in the group but is the requester
  expect(toDave.raw).toContain(id);
  expect(toDave.raw).toContain('CHG-9 retention');
  expect(toDave.raw).toContain(`${gw.controlUrl}/ui`);

  await api(gw.controlUrl, 'POST', `/api/requests/${id}/approve`, await token('dave@contoso.com'), {});
  const approved = await mailTo('carol@contoso.com', /approved: New-JournalRule/);
  expect(approved.raw).toContain('dave@contoso.com');

  const other = await api(gw.controlUrl, 'POST', '/api/requests', await token('eve@contoso.com'), { task: 'New-JournalRule', reason: 'x' });
  await api(gw.controlUrl, 'POST', `/api/requests/${other.body.id}/deny`, await token('carol@contoso.com'), { comment: 'use a ticket' });
  expect((await mailTo('eve@contoso.com', /denied: New-JournalRule/)).raw).toContain('use a ticket');
});

it('a server that says "try later" gets the mail on a later try; one that refuses it for good is not asked again', async () => {
  const later = await startSmtpServer({ refuse: (n) => (n <= 2 ? 421 : null) });
  const never = await startSmtpServer({ refuse: () => 550 });
  const gwLater = await startTestGateway({ policies: withNotify(later.port, '[0.2, 0.2, 0.2]'), upstreamUrl: upstream.url });
  const gwNever = await startTestGateway({ policies: withNotify(never.port, '[0.2, 0.2, 0.2]'), upstreamUrl: upstream.url });
  try {
    const a = await api(gwLater.controlUrl, 'POST', '/api/requests', await token('eve@contoso.com'), { task: 'Remove-Mailbox', reason: 'leaver' });
    expect(a.status).toBe(201);
    await eventually('the mail on the third try', async () => (later.mails.length > 0 ? true : undefined));
    expect(later.attempts()).toBe(3);
    expect(later.mails[0]!.to).toEqual(['alice@contoso.com', 'bob@contoso.com']);
    expect((await auditOf(gwLater)).some((e) => e.type === 'notify.failed')).toBe(false);

    const b = await api(gwNever.controlUrl, 'POST', '/api/requests', await token('eve@contoso.com'), { task: 'Remove-Mailbox', reason: 'leaver' });
    const failed = await eventually('notify.failed', async () => (await auditOf(gwNever)).find((e) => e.type === 'notify.failed' && e.requestId === b.body.id));
    expect(failed).toMatchObject({ about: 'request.created', attempts: 1, error: expect.stringContaining('mailbox unavailable') });
    await new Promise((r) => setTimeout(r, 500)); // longer than the retry waits: no second try came
    expect(never.attempts()).toBe(1);
  } finally {
    await gwLater.close();
    await gwNever.close();
    await later.stop();
    await never.stop();
    await Promise.all([gwLater, gwNever].map((x) => rm(x.dataDir, { recursive: true, force: true })));
  }
});

it('a mail still waiting for its next try when the gateway stops is given up at once, on record', async () => {
  const later = await startSmtpServer({ refuse: () => 421 });
  const g = await startTestGateway({ policies: withNotify(later.port, '[60]'), upstreamUrl: upstream.url });
  try {
    const r = await api(g.controlUrl, 'POST', '/api/requests', await token('eve@contoso.com'), { task: 'Remove-Mailbox', reason: 'leaver' });
    await eventually('the first try', async () => (later.attempts() === 1 ? true : undefined));
    await new Promise((r2) => setTimeout(r2, 100));
    const started = Date.now();
    await g.close();
    expect(Date.now() - started).toBeLessThan(5_000);
    const failed = (await auditOf(g)).find((e) => e.type === 'notify.failed' && e.requestId === r.body.id);
    expect(failed).toMatchObject({ attempts: 1, error: expect.stringContaining('the gateway stopped before the mail could be sent again') });
  } finally {
    await later.stop();
    await rm(g.dataDir, { recursive: true, force: true });
  }
});

it('a mail server that is down never blocks the request; after the retries the failure is audited as notify.failed', async () => {
  await smtp.stop();
  const created = await api(gw.controlUrl, 'POST', '/api/requests', await token('eve@contoso.com'), { task: 'Remove-Mailbox', reason: 'leaver' });
  expect(created.status).toBe(201);
  const failed = await eventually('notify.failed', async () => (await auditOf(gw)).find((e) => e.type === 'notify.failed' && e.requestId === created.body.id));
  expect(failed).toMatchObject({ about: 'request.created', to: ['alice@contoso.com', 'bob@contoso.com'], attempts: 3 });
});
