import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { TestClock } from '../helpers/gateway.js';
import { TEST_POLICIES } from '../helpers/policies.js';
import { send } from './raw.js';
import { INVOKE, invokeBody, startStack, type Stack } from './stack.js';

/**
 * One client flooding refusals must not crowd out the others: past its budget (refusalBurst,
 * earned back at refusalsPerSecond) its requests on command routes are answered 429 from the
 * head, unread, unforwarded and without an audit line each; other users, on the same address
 * too, are untouched.
 */
const POLICIES = TEST_POLICIES.replace('refusalBurst: 1000000', 'refusalBurst: 5').replace('refusalsPerSecond: 1000000', 'refusalsPerSecond: 1');

let s: Stack;
const clock = new TestClock();
beforeAll(async () => {
  s = await startStack({ policies: POLICIES, clock });
});
afterAll(() => s?.stop());
beforeEach(() => s.upstream.reset());

const GATED = invokeBody('New-JournalRule', { Name: 'x'.repeat(100_000) });
const count = (events: Array<Record<string, unknown>>, type: string): number => events.filter((e) => e['type'] === type).length;

describe('refusal flood', () => {
  it('past the burst a client is answered 429 unread; others on the same address still get their answers', async () => {
    const before = await s.auditEvents();
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) statuses.push((await send(s.proxy, { target: INVOKE, headers: { Authorization: s.auth.eve! }, body: GATED })).status);
    expect(statuses).toEqual([403, 403, 403, 403, 403, 429, 429, 429, 429, 429, 429, 429]);
    const throttled = await send(s.proxy, { target: INVOKE, headers: { Authorization: s.auth.eve! }, body: GATED });
    expect(throttled.status).toBe(429);
    expect(Number(throttled.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(JSON.parse(throttled.body).error.code).toBe('TooManyRequests');

    // The five refusals are on the record, the throttling once, the unread requests not one by one.
    const after = (await s.auditEvents()).slice(before.length);
    expect(count(after, 'task.blocked')).toBe(5);
    expect(count(after, 'client.throttled')).toBe(1);
    expect(after.find((e) => e['type'] === 'client.throttled')).toMatchObject({ actor: 'eve@contoso.com', remote: '127.0.0.1' });

    // Another user from the same address is decided as usual, and so is an anonymous ungated call.
    expect((await send(s.proxy, { target: INVOKE, headers: { Authorization: s.auth.mallory! }, body: GATED })).status).toBe(403);
    expect((await send(s.proxy, { target: INVOKE, headers: {}, body: invokeBody('Get-Mailbox') })).status).toBe(200);
    await s.expectNothingGated();

    // Budget comes back with time: one refusal per second.
    clock.ms += 2_000;
    expect((await send(s.proxy, { target: INVOKE, headers: { Authorization: s.auth.eve! }, body: GATED })).status).toBe(403);
  });

  it('an anonymous flood is throttled as one client; a token holder on the same address is not', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) statuses.push((await send(s.proxy, { target: INVOKE, headers: {}, body: GATED })).status);
    expect(statuses.slice(0, 5)).toEqual([401, 401, 401, 401, 401]);
    expect(statuses.slice(5)).toEqual([429, 429, 429]);
    const id = await s.grant('bob', { task: 'New-JournalRule' }, 'carol');
    expect(id).toBeTruthy();
    expect((await send(s.proxy, { target: INVOKE, headers: { Authorization: s.auth.bob! }, body: GATED })).status).toBe(200);
    expect(await s.upstream.gatedExecuted()).toEqual(['New-JournalRule']);
  });

  it('a granted call never spends the budget', async () => {
    for (let i = 0; i < 20; i++) expect((await send(s.proxy, { target: INVOKE, headers: { Authorization: s.auth.bob! }, body: GATED })).status).toBe(200);
  });
});
