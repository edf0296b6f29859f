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

/** A reload that adds requireMfa applies to requests already pending: one filed without MFA is never approved. */
describe('AccessService: requireMfa added while a request is pending', () => {
  const file = (requireMfa: boolean) =>
    new PolicySet(
      policyFileSchema.parse({
        version: 1,
        settings: { defaultApproverGroup: 'approvers' },
        groups: { approvers: ['alice@c.com'] },
        policies: [{ id: 'p', task: 'New-Thing', requireMfa }],
      }),
    );
  const eve = (amr: string[]): Identity => ({ user: 'eve@c.com', amr, expiresAt: null });
  const alice: Identity = { user: 'alice@c.com', amr: ['pwd', 'mfa'], expiresAt: null };
  let dir: string;
  let store: RequestStore;
  let current: PolicySet;
  let events: AuditEvent[];

  const open = async (): Promise<AccessService> => {
    store = await openEmbeddedStore(dir);
    const service = new AccessService(store, { append: async (e: AuditEvent) => void events.push(e) }, () => current, () => Date.parse('2026-11-23T00:00:00Z'));
    await service.load();
    return service;
  };
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pamgate-mfa-reload-'));
    current = file(false);
    events = [];
  });
  afterEach(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('filed without MFA: after the reload (and a restart) approval is a 409, deny still works, no grant', async () => {
    let service = await open();
    const plain = await service.create(eve(['pwd']), { task: 'New-Thing', reason: 'r' }, null);
    const strong = await service.create(eve(['pwd', 'mfa']), { task: 'New-Thing', reason: 'r' }, null);
    expect([plain.requesterMfa, strong.requesterMfa]).toEqual([false, true]);
    // what was filed is kept across a restart, so the check does not depend on this process's memory
    await store.close();
    current = file(true);
    service = await open();

    const err = await service.approve(plain.id, alice, null, null).then(
      () => null,
      (e: unknown) => e as ServiceError,
    );
    expect(err?.status).toBe(409);
    expect(err?.message).toMatch(/now requires MFA/);
    expect(service.get(plain.id, 'eve@c.com').status).toBe('pending');
    expect(service.grantsOf('eve@c.com').some((g) => g.requestId === plain.id)).toBe(false);
    expect((await service.deny(plain.id, alice, 'file again with MFA', null)).status).toBe('denied');

    expect((await service.approve(strong.id, alice, null, null)).status).toBe('approved');
    expect(service.grantsOf('eve@c.com').map((g) => g.requestId)).toEqual([strong.id]);
  });
});
