import { readFile } from 'node:fs/promises';
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
  const policies = TEST_POLICIES.replace('identity:', `notify:\n  smtp: smtp://127.0.0.1:${smtp.port}\n  from: pamgate@contoso.com\nidentity:`);
  gw = await startTestGateway({ policies, upstreamUrl: upstream.url });
});
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

it('a mail server that is down never blocks the request; the failure is audited as notify.failed', async () => {
  await smtp.stop();
  const created = await api(gw.controlUrl, 'POST', '/api/requests', await token('eve@contoso.com'), { task: 'Remove-Mailbox', reason: 'leaver' });
  expect(created.status).toBe(201);
  const deadline = Date.now() + 10_000;
  for (;;) {
    const events = (await readFile(gw.audit.path, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const failed = events.find((e) => e.type === 'notify.failed' && e.requestId === created.body.id);
    if (failed) {
      expect(failed).toMatchObject({ about: 'request.created', to: ['alice@contoso.com', 'bob@contoso.com'] });
      break;
    }
    if (Date.now() > deadline) throw new Error('no notify.failed event');
    await new Promise((r) => setTimeout(r, 50));
  }
});
