import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { api, invoke } from '../helpers/http.js';
import { TEST_POLICIES } from '../helpers/policies.js';
import { token } from '../helpers/tokens.js';
import { startUpstreamProcess, type CountingUpstream } from '../helpers/upstream.js';

let upstream: CountingUpstream;
let gw: TestGateway;
const t: Record<string, string> = {};

beforeAll(async () => {
  upstream = await startUpstreamProcess();
  gw = await startTestGateway({ policies: TEST_POLICIES, upstreamUrl: upstream.url });
  for (const u of ['eve', 'mallory', 'alice', 'bob', 'carol', 'dave', 'root', 'svc-backup']) t[u] = await token(`${u}@contoso.com`);
});
afterAll(async () => {
  await gw?.close();
  await upstream?.stop();
});
beforeEach(() => upstream.reset());

async function requestAccess(requester: string, body: Record<string, unknown>): Promise<string> {
  const r = await api(gw.controlUrl, 'POST', '/api/requests', t[requester], { reason: 'change 42', ...body });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body.id as string;
}
const approve = (id: string, who: string) => api(gw.controlUrl, 'POST', `/api/requests/${id}/approve`, t[who], { comment: 'ok' });

async function auditEvents(): Promise<Array<Record<string, unknown>>> {
  return (await readFile(gw.audit.path, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('the grant lifecycle through the proxy', () => {
  it('blocks, then forwards once approved, repeatedly, until expiry; revocation is immediate', async () => {
    const blocked = await invoke(gw.proxyUrl, 'New-JournalRule', { Name: 'j1' }, t.eve);
    expect(blocked.status).toBe(403);
    expect(blocked.body.error).toMatchObject({ code: 'PrivilegedAccessRequired', task: 'New-JournalRule', policy: 'journal-rules', requestUrl: `${gw.controlUrl}/api/requests` });
    expect(await upstream.count('New-JournalRule')).toBe(0);

    const id = await requestAccess('eve', { task: 'New-JournalRule', durationHours: 2 });
    expect((await invoke(gw.proxyUrl, 'New-JournalRule', {}, t.eve)).status).toBe(403); // still pending
    const approved = await approve(id, 'carol');
    expect(approved.body).toMatchObject({ id, status: 'approved' });

    expect((await invoke(gw.proxyUrl, 'New-JournalRule', { Name: 'j1' }, t.eve)).status).toBe(200);
    expect(await upstream.count('New-JournalRule')).toBe(1);
    expect((await invoke(gw.proxyUrl, 'New-JournalRule', { Name: 'j2' }, t.eve)).status).toBe(200);
    expect(await upstream.count('New-JournalRule')).toBe(2);

    const executed = (await auditEvents()).filter((e) => e.type === 'task.executed' && e.requestId === id);
    expect(executed).toHaveLength(2);

    gw.clock.advanceHours(2);
    expect((await invoke(gw.proxyUrl, 'New-JournalRule', {}, t.eve)).status).toBe(403);
    expect(await upstream.count('New-JournalRule')).toBe(2);
    expect((await api(gw.controlUrl, 'GET', `/api/requests/${id}`, t.eve)).body.status).toBe('expired');
  });

  it('revocation takes effect on the very next call', async () => {
    const id = await requestAccess('eve', { task: 'New-JournalRule' });
    await approve(id, 'dave');
    expect((await invoke(gw.proxyUrl, 'New-JournalRule', {}, t.eve)).status).toBe(200);
    const revoked = await api(gw.controlUrl, 'POST', `/api/requests/${id}/revoke`, t.carol, { comment: 'done' });
    expect(revoked.body.status).toBe('revoked');
    expect((await invoke(gw.proxyUrl, 'New-JournalRule', {}, t.eve)).status).toBe(403);
    expect(await upstream.count('New-JournalRule')).toBe(1);
    expect((await auditEvents()).some((e) => e.type === 'grant.revoked' && e.requestId === id && e.actor === 'carol@contoso.com')).toBe(true);
  });
});

describe('who may approve', () => {
  it('the requester may not approve their own request; non-members may not; group members may', async () => {
    const id = await requestAccess('carol', { task: 'New-JournalRule' });
    expect((await approve(id, 'carol')).status).toBe(403);
    expect((await approve(id, 'mallory')).status).toBe(403);
    expect((await approve(id, 'alice')).status).toBe(403); // approver, but not of this policy's group
    expect((await api(gw.controlUrl, 'GET', `/api/requests/${id}`, t.carol)).body.status).toBe('pending');
    expect((await approve(id, 'dave')).body.status).toBe('approved');
  });

  it('approvals: 2 needs two distinct approvers', async () => {
    const id = await requestAccess('eve', { task: 'Remove-Mailbox' });
    const first = await approve(id, 'alice');
    expect(first.body).toMatchObject({ status: 'pending', approvals: [{ approver: 'alice@contoso.com' }] });
    expect((await approve(id, 'alice')).status).toBe(409);
    expect((await invoke(gw.proxyUrl, 'Remove-Mailbox', { Identity: 'x' }, t.eve)).status).toBe(403);
    expect((await approve(id, 'bob')).body.status).toBe('approved');
    expect((await invoke(gw.proxyUrl, 'Remove-Mailbox', { Identity: 'x' }, t.eve)).status).toBe(200);
    expect(await upstream.count('Remove-Mailbox')).toBe(1);
    const approvals = (await auditEvents()).filter((e) => e.type === 'request.approved' && e.requestId === id);
    expect(approvals.map((e) => e.actor)).toEqual(['alice@contoso.com', 'bob@contoso.com']);
  });

  it('deny is final', async () => {
    const id = await requestAccess('eve', { task: 'New-JournalRule' });
    const denied = await api(gw.controlUrl, 'POST', `/api/requests/${id}/deny`, t.carol, { comment: 'no' });
    expect(denied.body.status).toBe('denied');
    expect((await approve(id, 'dave')).status).toBe(409);
    expect((await invoke(gw.proxyUrl, 'New-JournalRule', {}, t.eve)).status).toBe(403);
  });

  it('pending requests expire', async () => {
    const id = await requestAccess('eve', { task: 'New-JournalRule' });
    gw.clock.advanceHours(25);
    expect((await api(gw.controlUrl, 'GET', `/api/requests/${id}`, t.eve)).body.status).toBe('expired');
    expect((await approve(id, 'carol')).status).toBe(409);
    expect(await gw.service.sweep()).toBeGreaterThanOrEqual(1);
    expect((await auditEvents()).some((e) => e.type === 'request.expired' && e.requestId === id)).toBe(true);
  });

  it('cancel by the requester while pending', async () => {
    const id = await requestAccess('eve', { task: 'New-JournalRule' });
    expect((await api(gw.controlUrl, 'POST', `/api/requests/${id}/cancel`, t.mallory)).status).toBe(403);
    expect((await api(gw.controlUrl, 'POST', `/api/requests/${id}/cancel`, t.eve)).body.status).toBe('canceled');
    expect((await approve(id, 'carol')).status).toBe(409);
  });
});

describe('what a grant covers', () => {
  it("a grant for user A does not let user B through", async () => {
    const id = await requestAccess('eve', { task: 'New-JournalRule' });
    await approve(id, 'carol');
    expect((await invoke(gw.proxyUrl, 'New-JournalRule', {}, t.mallory)).status).toBe(403);
    expect((await invoke(gw.proxyUrl, 'New-JournalRule', {}, t.eve)).status).toBe(200);
    expect(await upstream.count('New-JournalRule')).toBe(1);
  });

  it('a grant for task X does not cover task Y', async () => {
    const id = await requestAccess('mallory', { task: 'New-JournalRule' });
    await approve(id, 'carol');
    expect((await invoke(gw.proxyUrl, 'Set-JournalRule', {}, t.mallory)).status).toBe(403);
    expect((await invoke(gw.proxyUrl, 'Remove-Mailbox', {}, t.mallory)).status).toBe(403);
    expect(await upstream.executed()).toEqual({});
  });

  it('a role grant covers every task of the role that has no policy of its own', async () => {
    const created = await api(gw.controlUrl, 'POST', '/api/requests', t.bob, { role: 'Journaling', reason: 'rotation' });
    expect(created.body.tasks).toEqual(['set-journalrule', 'remove-journalrule']);
    await approve(created.body.id, 'alice');
    for (const task of ['Set-JournalRule', 'Remove-JournalRule']) {
      expect((await invoke(gw.proxyUrl, task, {}, t.bob)).status).toBe(200);
    }
    // New-JournalRule has its own, stricter policy (journal-approvers, 8 h): the role grant does not override it.
    expect((await invoke(gw.proxyUrl, 'New-JournalRule', {}, t.bob)).status).toBe(403);
    expect((await invoke(gw.proxyUrl, 'Remove-Mailbox', {}, t.bob)).status).toBe(403);
    expect(await upstream.executed()).toEqual({ 'Set-JournalRule': 1, 'Remove-JournalRule': 1 });
  });

  it('a parameter-scoped grant blocks calls whose parameters fall outside it', async () => {
    const id = await requestAccess('dave', { task: 'Add-MailboxPermission' });
    await approve(id, 'alice');
    const inside = { Identity: 'ceo@contoso.com', User: 'dave@contoso.com', AccessRights: 'ReadPermission' };
    expect((await invoke(gw.proxyUrl, 'Add-MailboxPermission', inside, t.dave)).status).toBe(200);
    expect((await invoke(gw.proxyUrl, 'Add-MailboxPermission', { ...inside, AccessRights: 'FullAccess' }, t.dave)).status).toBe(403);
    expect((await invoke(gw.proxyUrl, 'Add-MailboxPermission', { ...inside, Identity: 'ceo@fabrikam.com' }, t.dave)).status).toBe(403);
    expect(await upstream.count('Add-MailboxPermission')).toBe(1);
  });

  it('requested parameters narrow the grant and must lie inside the policy', async () => {
    const outside = await api(gw.controlUrl, 'POST', '/api/requests', t.dave, { task: 'Add-MailboxPermission', reason: 'r', parameters: { AccessRights: 'FullAccess' } });
    expect(outside.status).toBe(400);
    expect(outside.body.error.field).toBe('parameters.AccessRights');
    const id = await requestAccess('carol', { task: 'Add-MailboxPermission', parameters: { Identity: 'ceo@contoso.com' } });
    await approve(id, 'bob');
    expect((await invoke(gw.proxyUrl, 'Add-MailboxPermission', { Identity: 'ceo@contoso.com', AccessRights: 'ReadPermission' }, t.carol)).status).toBe(200);
    expect((await invoke(gw.proxyUrl, 'Add-MailboxPermission', { Identity: 'cfo@contoso.com', AccessRights: 'ReadPermission' }, t.carol)).status).toBe(403);
  });

  it('a glob policy gates every matching task, and a grant covers only the task requested', async () => {
    expect((await invoke(gw.proxyUrl, 'New-TransportRule', {}, t.eve)).status).toBe(403);
    const id = await requestAccess('eve', { task: 'New-TransportRule' });
    await approve(id, 'alice');
    expect((await invoke(gw.proxyUrl, 'new-transportrule', {}, t.eve)).status).toBe(200);
    expect((await invoke(gw.proxyUrl, 'Remove-TransportRule', {}, t.eve)).status).toBe(403);
  });

  it('auto policies are approved at once and still audited', async () => {
    const r = await api(gw.controlUrl, 'POST', '/api/requests', t.eve, { task: 'Search-Mailbox', reason: 'legal hold' });
    expect(r.body.status).toBe('approved');
    expect((await invoke(gw.proxyUrl, 'Search-Mailbox', {}, t.eve)).status).toBe(200);
    const events = (await auditEvents()).filter((e) => e.requestId === r.body.id);
    expect(events.map((e) => e.type)).toEqual(['request.created', 'request.approved', 'task.executed']);
  });
});

describe('ungated traffic, identity and system accounts', () => {
  it('an ungated cmdlet is forwarded even without a token', async () => {
    expect((await invoke(gw.proxyUrl, 'Get-Mailbox', { Identity: 'x' })).status).toBe(200);
    expect(await upstream.count('Get-Mailbox')).toBe(1);
  });

  it('a gated cmdlet without a token is 401 and never reaches the upstream', async () => {
    const r = await invoke(gw.proxyUrl, 'New-JournalRule', {});
    expect(r.status).toBe(401);
    expect(r.body.error.code).toBe('AuthenticationRequired');
    expect((await invoke(gw.proxyUrl, 'New-JournalRule', {}, 'not-a-jwt')).status).toBe(401);
    expect((await invoke(gw.proxyUrl, 'New-JournalRule', {}, await token('eve@contoso.com', { secret: 'another-secret-of-16+chars' }))).status).toBe(401);
    expect((await invoke(gw.proxyUrl, 'New-JournalRule', {}, await token('eve@contoso.com', { expiresInSeconds: -60 }))).status).toBe(401);
    expect(await upstream.count('New-JournalRule')).toBe(0);
  });

  it('a system account is never gated and every use is audited as task.system', async () => {
    for (let i = 0; i < 3; i++) expect((await invoke(gw.proxyUrl, 'Remove-Mailbox', { Identity: `m${i}` }, t['svc-backup'])).status).toBe(200);
    expect(await upstream.count('Remove-Mailbox')).toBe(3);
    const uses = (await auditEvents()).filter((e) => e.type === 'task.system' && e.actor === 'svc-backup@contoso.com');
    expect(uses).toHaveLength(3);
  });

  it('blocked attempts are audited before the answer', async () => {
    await invoke(gw.proxyUrl, 'Set-JournalRule', { Name: 'x' }, t.mallory);
    const last = (await auditEvents()).at(-1)!;
    expect(last).toMatchObject({ type: 'task.blocked', actor: 'mallory@contoso.com', task: 'Set-JournalRule', policy: 'journaling-role' });
  });
});

describe('control API basics', () => {
  it('lists: requesters see their own, approvers theirs, admins all', async () => {
    const id = await requestAccess('mallory', { task: 'New-JournalRule' });
    const own = await api(gw.controlUrl, 'GET', '/api/requests', t.mallory);
    expect(own.body.every((r: { requester: string }) => r.requester === 'mallory@contoso.com')).toBe(true);
    expect((await api(gw.controlUrl, 'GET', '/api/requests?status=pending', t.carol)).body.some((r: { id: string }) => r.id === id)).toBe(true);
    expect((await api(gw.controlUrl, 'GET', `/api/requests/${id}`, t.bob)).status).toBe(403); // approver, but not of journal-rules
    expect((await api(gw.controlUrl, 'GET', `/api/requests/${id}`, t.root)).status).toBe(200);
    expect((await api(gw.controlUrl, 'GET', `/api/requests/${id}`, t.eve)).status).toBe(403);
  });

  it('errors: 400 names the field, 401 without token, 404 unknown id', async () => {
    const bad = await api(gw.controlUrl, 'POST', '/api/requests', t.eve, { task: 'New-JournalRule', durationHours: -1, reason: 'x' });
    expect(bad.status).toBe(400);
    expect(bad.body.error.field).toBe('durationHours');
    const noReason = await api(gw.controlUrl, 'POST', '/api/requests', t.eve, { task: 'New-JournalRule' });
    expect(noReason.body.error.field).toBe('reason');
    expect((await api(gw.controlUrl, 'POST', '/api/requests', t.eve, { task: 'Get-Mailbox', reason: 'x' })).status).toBe(400);
    expect((await api(gw.controlUrl, 'GET', '/api/requests')).status).toBe(401);
    expect((await api(gw.controlUrl, 'GET', '/api/requests/nope', t.eve)).status).toBe(404);
  });

  it('a duration over the policy maximum is refused, naming the maximum; up to it is kept as asked', async () => {
    const r = await api(gw.controlUrl, 'POST', '/api/requests', t.eve, { task: 'New-JournalRule', reason: 'x', durationHours: 100 });
    expect(r.status).toBe(400);
    expect(r.body.error).toMatchObject({ code: 'BadRequest', field: 'durationHours' });
    expect(r.body.error.message).toMatch(/at most 8 hours/);
    const atMax = await api(gw.controlUrl, 'POST', '/api/requests', t.eve, { task: 'New-JournalRule', reason: 'x', durationHours: 8 });
    expect(atMax.status).toBe(201);
    expect(atMax.body.durationHours).toBe(8);
  });

  it('health, readiness, metrics and OpenAPI answer without a token', async () => {
    expect((await api(gw.controlUrl, 'GET', '/healthz')).status).toBe(200);
    expect((await api(gw.controlUrl, 'GET', '/readyz')).body).toMatchObject({ status: 'ready' });
    expect((await api(gw.controlUrl, 'GET', '/metrics')).body).toContain('pamgate_proxy_requests_total');
    expect((await api(gw.controlUrl, 'GET', '/api/openapi.json')).body.openapi).toBe('3.1.0');
  });

  it('a blocked call names the task as typed, however long (long names are answered but not cached)', async () => {
    const stranger = await token('long-name@contoso.com');
    for (const name of ['New-JournalRule', `${'m'.repeat(300)}\\New-JournalRule`]) {
      for (let i = 0; i < 2; i++) {
        const r = await invoke(gw.proxyUrl, name, {}, stranger);
        expect(r.status).toBe(403);
        expect(r.body.error).toMatchObject({ code: 'PrivilegedAccessRequired', task: name, policy: 'journal-rules' });
      }
    }
  });

  it('metrics count audit events and time each durable audit write', async () => {
    const scrape = async (): Promise<{ events: number; writes: number; batches: number }> => {
      const text = (await api(gw.controlUrl, 'GET', '/metrics')).body as string;
      const value = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
      return { events: value('pamgate_audit_events_total'), writes: value('pamgate_audit_write_seconds_count'), batches: value('pamgate_audit_fsync_batches_total') };
    };
    const before = await scrape();
    const stranger = await token('metrics-stranger@contoso.com'); // holds no grant in this file
    expect((await invoke(gw.proxyUrl, 'New-JournalRule', {}, stranger)).status).toBe(403); // audited task.blocked
    const after = await scrape();
    expect(after.events).toBe(before.events + 1);
    expect(after.writes).toBe(before.writes + 1);
    expect(after.writes).toBe(after.batches); // one observation per durable batch, since start
  });

  it('review: admins see grants in a period with use counts', async () => {
    const id = await requestAccess('dave', { task: 'Search-Mailbox' });
    await invoke(gw.proxyUrl, 'Search-Mailbox', {}, t.dave);
    await invoke(gw.proxyUrl, 'Search-Mailbox', {}, t.dave);
    const unused = await requestAccess('dave', { task: 'Search-Mailbox' });
    expect((await api(gw.controlUrl, 'GET', '/api/review', t.dave)).status).toBe(403);
    const review = await api(gw.controlUrl, 'GET', '/api/review', t.root);
    const uses = Object.fromEntries(review.body.grants.map((g: { id: string; uses: number }) => [g.id, g.uses]));
    expect(uses[id] + uses[unused]).toBe(2); // both grants cover the same task; the newest or oldest may serve
    expect(review.body.neverUsed.length).toBeGreaterThanOrEqual(1);
  });
});
