import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, type Reply } from '../helpers/http.js';
import { token } from '../helpers/tokens.js';
import { send } from './raw.js';
import { INVOKE, invokeBody, startStack, type Stack } from './stack.js';

/** The control API under hostile input and concurrent approvers. */

let s: Stack;
const t: Record<string, string> = {};
beforeAll(async () => {
  s = await startStack();
  // Valid for days, so that moving the gateway clock past a pending expiry leaves them valid.
  for (const u of ['eve', 'alice', 'bob', 'carol', 'dave', 'root']) t[u] = await token(`${u}@contoso.com`, { expiresInSeconds: 7 * 86_400 });
});
afterAll(() => s?.stop());

async function rawPost(path: string, user: string, body: string): Promise<Reply> {
  const res = await fetch(`${s.control}${path}`, { method: 'POST', headers: { authorization: `Bearer ${t[user]}`, 'content-type': 'application/json' }, body });
  return { status: res.status, body: await res.json() };
}

function expectField(r: Reply, field: string, label: string): void {
  expect(r.status, `${label}: ${JSON.stringify(r.body)}`).toBe(400);
  expect(r.body.error.field, label).toBe(field);
  expect(r.body.error.message, label).toContain(field.split('.').pop());
}

async function create(user: string, body: Record<string, unknown>): Promise<string> {
  const r = await api(s.control, 'POST', '/api/requests', t[user], { reason: 'change 7', ...body });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body.id as string;
}

async function auditFor(id: string): Promise<Array<Record<string, unknown>>> {
  const lines = (await readFile(s.gw.audit.path, 'utf8')).trim().split('\n');
  return lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((e) => e['requestId'] === id);
}

const approveAs = (id: string, user: string) => api(s.control, 'POST', `/api/requests/${id}/approve`, t[user], { comment: `by ${user}` });

describe('control API input validation', () => {
  it('POST /api/requests: every field is validated and the 400 names it', async () => {
    const task = 'New-JournalRule';
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ task: 42, reason: 'r' }, 'task'],
      [{ task: '', reason: 'r' }, 'task'],
      [{ task: '   ', reason: 'r' }, 'task'],
      [{ task: 'x'.repeat(201), reason: 'r' }, 'task'],
      [{ task: 'New-JournalRule\u0000', reason: 'r' }, 'task'],
      [{ task: 'New-Journal\u200BRule', reason: 'r' }, 'task'],
      [{ task, role: 'Journaling', reason: 'r' }, 'task'],
      [{ reason: 'r' }, 'task'],
      [{ task: 'Remove-*', reason: 'r' }, 'task'],
      [{ task: 'Get-Mailbox', reason: 'r' }, 'task'],
      [{ role: 7, reason: 'r' }, 'role'],
      [{ role: 'Journaling\n', reason: 'r' }, 'role'],
      [{ role: 'NoSuchRole', reason: 'r' }, 'role'],
      [{ task, reason: 7 }, 'reason'],
      [{ task, reason: 'x'.repeat(2001) }, 'reason'],
      [{ task }, 'reason'],
      [{ task, reason: '   ' }, 'reason'],
      [{ task, reason: 'r', durationHours: '4' }, 'durationHours'],
      [{ task, reason: 'r', durationHours: 0 }, 'durationHours'],
      [{ task, reason: 'r', durationHours: -1 }, 'durationHours'],
      [{ task, reason: 'r', durationHours: 1e9 }, 'durationHours'],
      [{ task, reason: 'r', durationHours: null }, 'durationHours'],
      [{ task, reason: 'r', durationHours: true }, 'durationHours'],
      [{ task: 'Add-MailboxPermission', reason: 'r', parameters: 'AccessRights=ReadPermission' }, 'parameters'],
      [{ task: 'Add-MailboxPermission', reason: 'r', parameters: ['ReadPermission'] }, 'parameters'],
      [{ task: 'Add-MailboxPermission', reason: 'r', parameters: { AccessRights: 5 } }, 'parameters.AccessRights'],
      [{ task: 'Add-MailboxPermission', reason: 'r', parameters: { AccessRights: 'FullAccess' } }, 'parameters.AccessRights'],
      [{ task: 'Add-MailboxPermission', reason: 'r', parameters: { '-AccessRights': 'ReadPermission' } }, 'parameters.-AccessRights'],
      [{ task: 'Add-MailboxPermission', reason: 'r', parameters: { 'Access Rights': 'ReadPermission' } }, 'parameters.Access Rights'],
      [{ task, reason: 'r', ticket: 5 }, 'ticket'],
      [{ task, reason: 'r', ticket: 'x'.repeat(201) }, 'ticket'],
      [{ task, reason: 'r', ticket: 'CHG\u202E1' }, 'ticket'],
      [{ task, reason: 'rotation \u202Etxt.exe' }, 'reason'],
      [{ task, reason: 'nul\u0000byte' }, 'reason'],
      [{ task, reason: 'r', foo: 1 }, 'foo'],
      [{ Task: task, reason: 'r' }, 'Task'],
    ];
    for (const [body, field] of cases) expectField(await api(s.control, 'POST', '/api/requests', t.eve, body), field, JSON.stringify(body));
    expect((await api(s.control, 'POST', '/api/requests', t.eve, { task, reason: 'CHG-12:\n\tline two — Zoë' })).status).toBe(201); // lines and tabs are prose
    expectField(await rawPost('/api/requests', 'eve', `{"task":"${task}","reason":"r","__proto__":{"status":"approved"}}`), '__proto__', '__proto__');
  });

  it('POST /api/requests: a body that is not one JSON object is a 400', async () => {
    for (const body of ['', 'not json', '[]', 'null', '"task"', '{"task":"New-JournalRule",}']) {
      const r = await rawPost('/api/requests', 'eve', body);
      expect(r.status, body).toBe(400);
    }
  });

  it('a body with a key given twice (or twice in different case) is a 400, not its last reading', async () => {
    const before = (await api(s.control, 'GET', '/api/requests', t.eve)).body.length as number;
    const bodies = [
      '{"task":"New-JournalRule","task":"Remove-Mailbox","reason":"r"}',
      '{"task":"New-JournalRule","reason":"r","reason":"other"}',
      // two spellings of one parameter: a grant's scope folds names, so only one could ever count
      '{"task":"Add-MailboxPermission","reason":"r","parameters":{"AccessRights":"ReadPermission","accessrights":"ReadPermission"}}',
    ];
    for (const body of bodies) {
      const r = await rawPost('/api/requests', 'eve', body);
      expect(r.status, body).toBe(400);
      expect(r.body.error.message, body).toMatch(/^request body is ambiguous: .*more than once/);
    }
    const id = await create('eve', { task: 'Remove-Mailbox' });
    const r = await rawPost(`/api/requests/${id}/deny`, 'alice', '{"comment":"a","comment":"b"}');
    expect(r.status).toBe(400);
    expect((await api(s.control, 'GET', `/api/requests/${id}`, t.eve)).body).toMatchObject({ status: 'pending' });
    expect((await api(s.control, 'GET', '/api/requests', t.eve)).body.length).toBe(before + 1);
  });

  it('a query name given twice is a 400 naming it', async () => {
    expectField(await api(s.control, 'GET', '/api/requests?status=pending&status=approved', t.eve), 'status', 'repeated status');
    expectField(await api(s.control, 'GET', '/api/requests?limit=1&limit=500', t.eve), 'limit', 'repeated limit');
    expectField(await api(s.control, 'GET', '/api/review?from=2030-01-01T00:00:00Z&from=2020-01-01T00:00:00Z', t.root), 'from', 'repeated from');
    expect((await api(s.control, 'GET', '/api/requests?status=pending', t.eve)).status).toBe(200);
  });

  it('decision bodies and list/review queries are validated field by field', async () => {
    const id = await create('eve', { task: 'Remove-Mailbox' });
    expectField(await api(s.control, 'POST', `/api/requests/${id}/approve`, t.alice, { comment: 5 }), 'comment', 'comment type');
    expectField(await api(s.control, 'POST', `/api/requests/${id}/deny`, t.alice, { comment: 'x'.repeat(2001) }), 'comment', 'comment length');
    expectField(await api(s.control, 'POST', `/api/requests/${id}/deny`, t.alice, { comment: 'fine\u200B' }), 'comment', 'invisible characters in a comment');
    expectField(await api(s.control, 'POST', `/api/requests/${id}/approve`, t.alice, { comment: 'ok', approvals: 99 }), 'approvals', 'unknown field');
    expect((await rawPost(`/api/requests/${id}/approve`, 'alice', '{"comment":')).status).toBe(400);
    expectField(await api(s.control, 'GET', '/api/requests?status=bogus', t.eve), 'status', 'status');
    expectField(await api(s.control, 'GET', '/api/requests?requester=%00', t.eve), 'requester', 'requester');
    expectField(await api(s.control, 'GET', '/api/requests?approver=alice', t.eve), 'approver', 'unknown query');
    expectField(await api(s.control, 'GET', '/api/review?from=yesterday', t.root), 'from', 'from');
    expectField(await api(s.control, 'GET', '/api/review?from=2030-01-02T00:00:00Z&to=2030-01-01T00:00:00Z', t.root), 'from', 'from after to');
    expectField(await api(s.control, 'GET', '/api/review?until=2030-01-01T00:00:00Z', t.root), 'until', 'unknown review query');
    // None of that changed the request.
    expect((await api(s.control, 'GET', `/api/requests/${id}`, t.eve)).body).toMatchObject({ status: 'pending', approvals: [] });
  });

  it('unknown ids are 404 for every verb', async () => {
    for (const id of [randomUUID(), 'nope', '..%2F..%2Fetc', '%00']) {
      expect((await api(s.control, 'GET', `/api/requests/${id}`, t.eve)).status, id).toBe(404);
      for (const verb of ['approve', 'deny', 'cancel', 'revoke']) {
        expect((await api(s.control, 'POST', `/api/requests/${id}/${verb}`, t.alice, {})).status, `${verb} ${id}`).toBe(404);
      }
    }
  });
});

describe('concurrent approvals', () => {
  it('two approvers at once on a two-approval request: each counted once, one transition', async () => {
    for (let round = 0; round < 5; round++) {
      const id = await create('eve', { task: 'Remove-Mailbox' }); // mailbox-removal: 2 of pam-approvers
      const replies = await Promise.all([approveAs(id, 'alice'), approveAs(id, 'bob')]);
      expect(replies.map((r) => r.status)).toEqual([200, 200]);
      const final = (await api(s.control, 'GET', `/api/requests/${id}`, t.eve)).body;
      expect(final.status).toBe('approved');
      expect(final.approvals.map((a: { approver: string }) => a.approver).sort()).toEqual(['alice@contoso.com', 'bob@contoso.com']);
      const approved = (await auditFor(id)).filter((e) => e['type'] === 'request.approved');
      expect(approved.map((e) => e['actor']).sort()).toEqual(['alice@contoso.com', 'bob@contoso.com']);
      expect(approved.filter((e) => e['status'] === 'approved')).toHaveLength(1);
      // Revoke so the next round starts from no grant.
      expect((await api(s.control, 'POST', `/api/requests/${id}/revoke`, t.alice, {})).status).toBe(200);
    }
  });

  it('two approvers at once on a one-approval request: one approves, the other gets 409', async () => {
    const id = await create('eve', { task: 'New-JournalRule' }); // journal-rules: 1 of carol, dave
    const replies = await Promise.all([approveAs(id, 'carol'), approveAs(id, 'dave')]);
    expect(replies.map((r) => r.status).sort()).toEqual([200, 409]);
    const final = (await api(s.control, 'GET', `/api/requests/${id}`, t.eve)).body;
    expect(final).toMatchObject({ status: 'approved' });
    expect(final.approvals).toHaveLength(1);
    expect((await auditFor(id)).filter((e) => e['type'] === 'request.approved')).toHaveLength(1);
    await api(s.control, 'POST', `/api/requests/${id}/revoke`, t.carol, {});
  });

  it('one approver many times at once counts once', async () => {
    const id = await create('eve', { task: 'Remove-Mailbox' });
    const replies = await Promise.all(Array.from({ length: 8 }, () => approveAs(id, 'alice')));
    expect(replies.filter((r) => r.status === 200)).toHaveLength(1);
    expect(replies.filter((r) => r.status === 409)).toHaveLength(7);
    const final = (await api(s.control, 'GET', `/api/requests/${id}`, t.eve)).body;
    expect(final).toMatchObject({ status: 'pending' });
    expect(final.approvals).toHaveLength(1);
    expect(await s.upstream.gatedExecuted()).toEqual([]);
    expect((await send(s.proxy, { target: INVOKE, headers: { Authorization: `Bearer ${t.eve}` }, body: invokeBody('Remove-Mailbox') })).status).toBe(403);
  });
});

describe('expiry (TestClock)', () => {
  it('approve, deny or cancel after the pending request expired is 409, and grants nothing', async () => {
    const id = await create('eve', { task: 'New-JournalRule' });
    const start = s.gw.clock.ms;
    s.gw.clock.advanceHours(24);
    try {
      expect((await approveAs(id, 'carol')).status).toBe(409);
      expect((await api(s.control, 'POST', `/api/requests/${id}/deny`, t.dave, {})).status).toBe(409);
      expect((await api(s.control, 'POST', `/api/requests/${id}/cancel`, t.eve, {})).status).toBe(409);
      expect((await api(s.control, 'GET', `/api/requests/${id}`, t.eve)).body.status).toBe('expired');
      expect((await send(s.proxy, { target: INVOKE, headers: { Authorization: `Bearer ${t.eve}` }, body: invokeBody('New-JournalRule') })).status).toBe(403);
      expect((await auditFor(id)).filter((e) => e['type'] === 'request.approved')).toEqual([]);
    } finally {
      s.gw.clock.ms = start;
    }
  });

  it('revoking a grant that has already expired is 409', async () => {
    const id = await create('eve', { task: 'New-JournalRule', durationHours: 1 });
    expect((await approveAs(id, 'carol')).status).toBe(200);
    const start = s.gw.clock.ms;
    s.gw.clock.advanceHours(1);
    try {
      expect((await api(s.control, 'POST', `/api/requests/${id}/revoke`, t.carol, {})).status).toBe(409);
      expect((await send(s.proxy, { target: INVOKE, headers: { Authorization: `Bearer ${t.eve}` }, body: invokeBody('New-JournalRule') })).status).toBe(403);
    } finally {
      s.gw.clock.ms = start;
    }
  });
});

describe('refused changes are on the record', () => {
  it('a 403 on approve, deny, cancel or revoke is audited as request.refused before the answer; a 409 is not', async () => {
    const id = await create('eve', { task: 'New-JournalRule' });
    const attempts: Array<[string, string, string]> = [
      ['eve', 'approve', 'you cannot approve or deny your own request'],
      ['alice', 'deny', 'only members of approver group "journal-approvers"'],
      ['bob', 'cancel', 'only the requester may cancel'],
    ];
    for (const [user, action, message] of attempts) {
      const r = await api(s.control, 'POST', `/api/requests/${id}/${action}`, t[user], action === 'cancel' ? undefined : { comment: 'x' });
      expect(r.status, `${user} ${action}: ${JSON.stringify(r.body)}`).toBe(403);
      expect(r.body.error.message).toContain(message);
    }
    expect((await approveAs(id, 'carol')).status).toBe(200);
    const revoke = await api(s.control, 'POST', `/api/requests/${id}/revoke`, t.bob, { comment: 'x' });
    expect(revoke.status).toBe(403);
    expect((await approveAs(id, 'dave')).status).toBe(409); // wrong state: not an attempt beyond one's rights

    const refused = (await auditFor(id)).filter((e) => e['type'] === 'request.refused');
    expect(refused.map((e) => [e['actor'], e['action']])).toEqual([
      ['eve@contoso.com', 'approve'],
      ['alice@contoso.com', 'deny'],
      ['bob@contoso.com', 'cancel'],
      ['bob@contoso.com', 'revoke'],
    ]);
    for (const e of refused) {
      expect(e['task']).toBe('New-JournalRule');
      expect(e['requester']).toBe('eve@contoso.com');
      expect(String(e['error'])).not.toBe('');
    }
    // The refusals changed nothing: the grant carol approved still holds.
    expect((await send(s.proxy, { target: INVOKE, headers: { Authorization: `Bearer ${t.eve}` }, body: invokeBody('New-JournalRule') })).status).toBe(200);
  });
});
