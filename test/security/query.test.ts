import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { send } from './raw.js';
import { invokeBody, startStack, type Stack } from './stack.js';

/**
 * A command name in the query string (of the request line, or of a path-override header's URL)
 * makes a request gateable even on a path that looks harmless: an upstream that reads its
 * command from the query must not be handed one the gateway never classified.
 */

let s: Stack;
beforeAll(async () => {
  s = await startStack();
});
afterAll(() => s?.stop());
beforeEach(() => s.upstream.reset());

const GATED = invokeBody('New-JournalRule');

describe('a cmdlet named in the query string', () => {
  it('on the request line: classified and refused (403), audited, never forwarded', async () => {
    for (const target of ['/adminapi/beta/contoso/Mailbox?CmdletName=New-JournalRule', '/other?command=New-JournalRule', '/x?%63mdlet=New-JournalRule']) {
      const r = await send(s.proxy, { target, headers: { Authorization: s.auth.eve! }, body: GATED });
      expect(r.status, `${target} → ${r.body}`).toBe(403);
      expect(JSON.parse(r.body).error.code).toBe('PrivilegedAccessRequired');
    }
    await s.expectNothingGated();
    const blocked = (await s.auditEvents()).filter((e) => e['type'] === 'task.blocked');
    expect(blocked.length).toBeGreaterThanOrEqual(3);
  });

  it("in a path-override header's URL: classified and refused (403), never forwarded", async () => {
    for (const header of ['X-Original-URL', 'X-Rewrite-URL']) {
      const r = await send(s.proxy, { target: '/adminapi/beta/contoso/Mailbox', headers: { Authorization: s.auth.eve!, [header]: '/somewhere?cmdlet=New-JournalRule' }, body: GATED });
      expect(r.status, `${header} → ${r.body}`).toBe(403);
    }
    await s.expectNothingGated();
  });

  it('control: the same path without a command in the query is forwarded untouched', async () => {
    const r = await send(s.proxy, { target: '/adminapi/beta/contoso/Mailbox?view=full', headers: { Authorization: s.auth.eve! }, body: GATED });
    expect(r.status).toBe(404); // the upstream's own answer: it was forwarded, not classified
    expect(r.body).toContain('no route');
  });
});
