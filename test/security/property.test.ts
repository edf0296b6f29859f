import { parse as legacyUrlParse } from 'node:url';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { classifyExchange } from '../../src/classify/exchange.js';
import { parsePolicyText } from '../../src/config/load.js';
import { PolicySet } from '../../src/policy/compile.js';
import { decide, type Grant, type Identity } from '../../src/policy/decide.js';
import { TEST_POLICIES } from '../helpers/policies.js';
import { TEST_SECRET } from '../helpers/tokens.js';
import { GATED_CMDLETS, readLeniently, type Executed } from './lenient-reader.js';
import { send } from './raw.js';
import { startStack, type Stack } from './stack.js';
import { gatedRequest, smuggledAccessRights, type RenderedRequest } from './variants.js';

/**
 * For every generated spelling of a gated request: the gateway blocks it, or the lenient
 * reader — reading the bytes the gateway would forward — runs no gated task. The bulk runs
 * the exact code the proxy runs (classifyExchange + decide); a sample goes over real sockets.
 */

const loaded = parsePolicyText(TEST_POLICIES, 'policies.yaml', { PAMGATE_JWT_SECRET: TEST_SECRET });
if (!loaded.ok) throw new Error('TEST_POLICIES do not load');
const policies = new PolicySet(loaded.config);
const NOW = Date.now();
const eve: Identity = { user: 'eve@contoso.com', amr: ['pwd'], expiresAt: null };
const dave: Identity = { user: 'dave@contoso.com', amr: ['pwd'], expiresAt: null };
const daveMailboxGrant: Grant = { requestId: 'r1', requester: dave.user, policyId: 'mailbox-permissions', taskKeys: new Set(['add-mailboxpermission']), scope: null, expiresAt: NOW + 3_600_000 };

/**
 * The path the forwarder puts on the upstream request (as http-proxy did): legacy url.parse,
 * then a join that collapses slashes before the query. The socket sample checks the real thing.
 */
function forwardedTarget(target: string): string {
  const [path = '', ...query] = (legacyUrlParse(target).path ?? '').split('?');
  return [('/' + path).replace(/\/+/g, '/').replace('http:/', 'http://').replace('https:/', 'https://'), ...query].join('?');
}

function gatewayBlocks(req: RenderedRequest, identity: Identity, grants: readonly Grant[]): boolean {
  const head = { url: req.target, contentType: req.headers['content-type'], contentEncoding: req.headers['content-encoding'] };
  const classified = classifyExchange(head, req.body, policies.settings.maxBodyBytes);
  if (classified.kind === 'reject') return true;
  if (classified.kind === 'pass') return false;
  return decide(classified.commands, policies, identity, () => grants, NOW).action === 'block';
}

function lenientlyExecuted(req: RenderedRequest): Executed[] {
  const reading = readLeniently({ method: 'POST', target: forwardedTarget(req.target), headers: req.headers, body: req.body });
  return reading.status === 200 ? reading.executed : [];
}

const GATED = [...GATED_CMDLETS];

describe('property: no spelling of a gated request gets a gated task run', () => {
  it('10,000 variants through classifyExchange + decide against the lenient reader', () => {
    let lenientRanGated = 0;
    let blocked = 0;
    fc.assert(
      fc.property(gatedRequest(GATED), (req) => {
        const gated = lenientlyExecuted(req).filter((e) => e.gated);
        const blocks = gatewayBlocks(req, eve, []);
        if (gated.length > 0) lenientRanGated++;
        if (blocks) blocked++;
        if (!blocks && gated.length > 0) throw new Error(`forwarded, and the upstream would run ${gated.map((e) => e.cmdlet).join(', ')}: ${req.describe}`);
      }),
      { numRuns: 10_000 },
    );
    // Not vacuous: most variants are ones the upstream really would run, and each was blocked.
    expect(lenientRanGated).toBeGreaterThan(5_000);
    expect(blocked).toBeGreaterThanOrEqual(lenientRanGated);
  });

  it('2,000 parameter-smuggling variants against a grant scoped to AccessRights=ReadPermission', () => {
    const allowed = (v: unknown): boolean => (Array.isArray(v) ? v.length > 0 && v.every(allowed) : typeof v === 'string' && v.toLowerCase() === 'readpermission');
    let forwarded = 0;
    fc.assert(
      fc.property(gatedRequest(['Add-MailboxPermission'], smuggledAccessRights()), (req) => {
        if (gatewayBlocks(req, dave, [daveMailboxGrant])) return;
        forwarded++;
        for (const e of lenientlyExecuted(req)) {
          if (!e.gated) continue;
          // A name the upstream does not bind as AccessRights leaves it unset (and the cmdlet fails); a bound value must be in scope.
          if (e.cmdlet !== 'Add-MailboxPermission' || ('accessrights' in e.params && !allowed(e.params['accessrights']))) {
            throw new Error(`forwarded, and the upstream would run ${e.cmdlet} with ${JSON.stringify(e.params)}: ${req.describe}`);
          }
        }
      }),
      { numRuns: 2_000 },
    );
    expect(forwarded).toBeGreaterThan(0); // the grant does let in-scope spellings through
  });
});

describe('property over real sockets', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack();
  });
  afterAll(() => s?.stop());

  it('300 variants sent to the gateway in front of the lenient upstream', async () => {
    await fc.assert(
      fc.asyncProperty(gatedRequest(GATED), async (req) => {
        const r = await send(s.proxy, { target: req.target, headers: { ...req.headers, Authorization: s.auth.eve! }, body: req.body });
        if (lenientlyExecuted(req).some((e) => e.gated)) expect([400, 403, 413], req.describe).toContain(r.status);
      }),
      { numRuns: 300 },
    );
    await s.expectNothingGated();
  });
});
