import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { policyFileSchema } from '../../src/config/schema.js';
import * as model from '../../src/grants/model.js';
import type { AccessRequest, RequestStatus } from '../../src/grants/model.js';
import { AccessService } from '../../src/grants/service.js';
import type { RequestStore } from '../../src/grants/store.js';
import { PolicySet } from '../../src/policy/compile.js';

// AccessService keeps compact forms of its requests: listings that list() filters on (it parses
// only what it returns), and a packed grant index. Both must give exactly what the model's own
// rules give over the full requests.
const policies = new PolicySet(
  policyFileSchema.parse({
    version: 1,
    settings: { defaultApproverGroup: 'ops', adminGroup: 'admins' },
    groups: { ops: ['olga@c.com'], sec: ['sam@c.com'], admins: ['ada@c.com'] },
    policies: [
      { id: 'p-ops', task: 'New-Thing' },
      { id: 'p-sec', task: 'Remove-Thing', approverGroup: 'sec' },
      { id: 'p-auto', task: 'Get-Secret', approval: 'auto' },
    ],
  }),
);
const USERS = ['u1@c.com', 'u2@c.com', 'olga@c.com', 'sam@c.com'];
const VIEWERS = [...USERS, 'ada@c.com', 'nobody@c.com'];
const STATUSES: RequestStatus[] = ['pending', 'approved', 'denied', 'canceled', 'expired', 'revoked'];
const NOW = Date.parse('2026-12-01T12:00:00.000Z');
const iso = (ms: number): string => new Date(ms).toISOString();

const request = fc
  .record({
    requester: fc.constantFrom(...USERS),
    policy: fc.constantFrom('p-ops', 'p-sec', 'p-auto', 'p-gone'),
    approverGroup: fc.constantFrom('ops', 'sec', null),
    status: fc.constantFrom(...STATUSES),
    created: fc.integer({ min: -48, max: 0 }),
    due: fc.integer({ min: -5, max: 5 }),
    expiresAtNull: fc.boolean(),
  })
  .map((r, i): Omit<AccessRequest, 'id'> => ({
    requester: r.requester,
    task: 'New-Thing',
    role: null,
    tasks: ['new-thing'],
    policy: r.policy,
    approverGroup: r.approverGroup,
    approvalsRequired: 1,
    reason: `r${i}`,
    ticket: null,
    parameters: null,
    durationHours: 4,
    status: r.status,
    createdAt: iso(NOW + r.created * 3_600_000),
    pendingExpiresAt: iso(NOW + r.due * 3_600_000),
    approvals: [],
    approvedAt: r.status === 'approved' ? iso(NOW - 3_600_000) : null,
    expiresAt: r.status === 'approved' && r.expiresAtNull ? null : iso(NOW + r.due * 3_600_000),
    decidedBy: null,
    decidedAt: null,
    comment: null,
  }));

function service(requests: AccessRequest[]): AccessService {
  const store: RequestStore = {
    get: async () => undefined,
    put: async () => undefined,
    forEach: async (visit) => requests.forEach((r) => visit(r)),
    withLock: (_id, fn) => fn(async () => undefined),
    removeEnded: async (ids) => [...ids],
    ping: async () => true,
    close: async () => undefined,
  };
  return new AccessService(store, { append: async () => undefined }, () => policies, () => NOW);
}

describe('AccessService.list', () => {
  it('gives what filtering every full request with the model gives, for every viewer and filter', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(request, { maxLength: 40 }),
        fc.constantFrom(...VIEWERS),
        fc.option(fc.constantFrom(...STATUSES), { nil: undefined }),
        fc.option(fc.constantFrom(...USERS, 'U1@C.COM'), { nil: undefined }),
        async (drafts, viewer, status, requester) => {
          const requests = drafts.map((d, i) => ({ ...d, id: `r${i}` }));
          const svc = service(requests);
          await svc.load();
          const expected = requests
            .filter((r) => model.mayView(r, viewer, policies))
            .map((r) => ({ ...r, status: model.effectiveStatus(r, NOW) }))
            .filter((r) => status === undefined || r.status === status)
            .filter((r) => requester === undefined || r.requester === requester.toLowerCase())
            .sort((a, b) => a.createdAt.localeCompare(b.createdAt) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
          expect(svc.list(viewer, { status, requester })).toEqual({ requests: expected, next: null });
        },
      ),
      { numRuns: 300 },
    );
  });

  it('pages: following `next` with any page size gives the whole listing once, in order, each page at most `limit`', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(request, { maxLength: 40 }),
        fc.constantFrom(...VIEWERS),
        fc.option(fc.constantFrom(...STATUSES), { nil: undefined }),
        fc.integer({ min: 1, max: 12 }),
        async (drafts, viewer, status, limit) => {
          const requests = drafts.map((d, i) => ({ ...d, id: `r${i}` }));
          const svc = service(requests);
          await svc.load();
          const whole = svc.list(viewer, { status }).requests;
          const paged: AccessRequest[] = [];
          let after: string | undefined;
          for (let pages = 0; ; pages++) {
            expect(pages).toBeLessThanOrEqual(whole.length);
            const page = svc.list(viewer, { status, limit, after });
            expect(page.requests.length).toBeLessThanOrEqual(limit);
            paged.push(...page.requests);
            if (page.next === null) break;
            expect(page.requests).toHaveLength(limit);
            expect(page.next).toBe(page.requests.at(-1)!.id);
            after = page.next;
          }
          expect(paged).toEqual(whole);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('refuses a cursor that names no request', async () => {
    const svc = service([]);
    await svc.load();
    expect(() => svc.list(VIEWERS[0]!, { after: 'nope' })).toThrow(/after: no request "nope"/);
  });
});

describe('AccessService.grantsOf and activeGrantCount', () => {
  it('after load, hold exactly the approved, unexpired grants of each user, as the model gives them', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(request, { maxLength: 40 }), async (drafts) => {
        const requests = drafts.map((d, i) => ({ ...d, id: `r${i}` }));
        const svc = service(requests);
        await svc.load();
        const active = requests.map((r) => model.grantOf(r)).filter((g) => g !== null && g.expiresAt > NOW);
        for (const user of [...USERS, 'nobody@c.com']) {
          const got = [...svc.grantsOf(user)].sort((a, b) => a.requestId.localeCompare(b.requestId));
          expect(got).toEqual(active.filter((g) => g!.requester === user).sort((a, b) => a!.requestId.localeCompare(b!.requestId)));
        }
        expect(svc.activeGrantCount()).toBe(active.length);
      }),
      { numRuns: 300 },
    );
  });
});
