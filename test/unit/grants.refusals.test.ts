import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AuditEvent } from '../../src/audit/log.js';
import { policyFileSchema } from '../../src/config/schema.js';
import { AccessService, ServiceError } from '../../src/grants/service.js';
import { openEmbeddedStore, type RequestStore } from '../../src/grants/store.js';
import { PolicySet } from '../../src/policy/compile.js';
import type { Identity } from '../../src/policy/decide.js';

/** A refused change (403) is audited as request.refused before it is answered, and changes nothing. */
describe('AccessService: refused changes', () => {
  const policies = new PolicySet(
    policyFileSchema.parse({
      version: 1,
      settings: { defaultApproverGroup: 'approvers' },
      groups: { approvers: ['alice@c.com'] },
      policies: [
        { id: 'mfa', task: 'Set-Thing', requireMfa: true },
        { id: 'plain', task: 'New-Thing' },
      ],
    }),
  );
  const eve: Identity = { user: 'eve@c.com', amr: ['pwd'], expiresAt: null };
  let dir: string;
  let store: RequestStore;
  let events: AuditEvent[];
  let auditDown: boolean;
  let service: AccessService;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pamgate-refusals-'));
    store = await openEmbeddedStore(dir);
    events = [];
    auditDown = false;
    const audit = { append: async (e: AuditEvent) => { if (auditDown) throw new Error('disk gone'); events.push(e); } };
    service = new AccessService(store, audit, () => policies, () => Date.parse('2026-11-23T00:00:00Z'));
    await service.load();
  });
  afterEach(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  const refusal = (p: Promise<unknown>) => p.then(() => { throw new Error('not refused'); }, (err: unknown) => err as ServiceError);

  it('filing under an MFA policy without MFA: 403, audited with the action, nothing created', async () => {
    const err = await refusal(service.create(eve, { task: 'set-thing', reason: 'r' }, '10.0.0.9'));
    expect(err.status).toBe(403);
    expect(events).toEqual([expect.objectContaining({ type: 'request.refused', actor: 'eve@c.com', task: 'set-thing', policy: 'mfa', requestId: null, remote: '10.0.0.9', action: 'create' })]);
    expect(service.list('eve@c.com', {}).requests).toEqual([]);
  });

  it('self-approval is audited once; when the audit cannot be written the answer is still 403 and the request untouched', async () => {
    const req = await service.create(eve, { task: 'New-Thing', reason: 'r' }, null);
    events.length = 0;
    expect((await refusal(service.approve(req.id, eve, null, null))).status).toBe(403);
    expect(events.map((e) => [e.type, e['action'], e.requestId])).toEqual([['request.refused', 'approve', req.id]]);

    auditDown = true;
    expect((await refusal(service.approve(req.id, eve, null, null))).status).toBe(403);
    expect(service.get(req.id, 'eve@c.com').status).toBe('pending');
    expect(events).toHaveLength(1);
  });

  it('a wrong state (409) is not audited as a refusal', async () => {
    const alice: Identity = { user: 'alice@c.com', amr: [], expiresAt: null };
    const req = await service.create(eve, { task: 'New-Thing', reason: 'r' }, null);
    await service.deny(req.id, alice, 'no', null);
    events.length = 0;
    expect((await refusal(service.approve(req.id, alice, null, null))).status).toBe(409);
    expect(events).toEqual([]);
  });
});
