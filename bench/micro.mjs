// Microbenchmarks of the decision core (run with --expose-gc; `npm run bench -- --micro`).
//   ns per policy lookup / grant lookup / whole decision, at 10 and 10,000 policies
//   heap per 100,000 grants (the gateway's in-memory state, and the hot-path grant index alone)
// --quick: fewer iterations and a 10,000-grant heap sample (smoke mode).
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parsePolicyText } from '../dist/config/load.js';
import { AccessService } from '../dist/grants/service.js';
import { GrantIndex } from '../dist/grants/grant-index.js';
import { grantOf } from '../dist/grants/model.js';
import { openEmbeddedStore } from '../dist/grants/store.js';
import { PolicySet } from '../dist/policy/compile.js';
import { decide } from '../dist/policy/decide.js';
import { taskKey } from '../dist/policy/names.js';
import { BENCH_USER, JWT_SECRET, otherUsersGrants, policyYaml, seedJournal } from './fixtures.mjs';

const QUICK = process.argv.includes('--quick');
const ITER = QUICK ? 50_000 : 1_000_000;
const BATCHES = QUICK ? 3 : 7;
const HEAP_GRANTS = QUICK ? 10_000 : 100_000;
// --quick (smoke) proves the code runs: a tenth of the large state.
const LARGE = QUICK ? [1_000, 10_000] : [10_000, 100_000];
const gc = globalThis.gc ?? (() => undefined);
const mb = (b) => (b / 1048576).toFixed(1) + ' MiB';
if (!globalThis.gc) console.log('(run with --expose-gc for heap numbers)');

function policySet(count) {
  const r = parsePolicyText(policyYaml(count), `policies-${count}.yaml`, { PAMGATE_JWT_SECRET: JWT_SECRET });
  if (!r.ok) throw new Error(JSON.stringify(r.errors.slice(0, 3)));
  return new PolicySet(r.config);
}

const memoryStore = (requests) => ({
  forEach: async (visit) => requests.forEach((r) => visit(r)),
  get: async () => undefined,
  put: async () => undefined,
  withLock: (_id, fn) => fn(),
  removeEnded: async (ids) => [...ids],
  ping: async () => true,
  close: async () => undefined,
});
const noAudit = { append: async () => undefined };

function benchUserRequest(now) {
  const iso = (ms) => new Date(ms).toISOString();
  return {
    id: 'bench-grant', requester: BENCH_USER, task: 'Add-MailboxPermission', role: null, tasks: ['add-mailboxpermission'],
    policy: 'mailbox-permissions', approverGroup: 'pam-approvers', approvalsRequired: 1, reason: 'bench', ticket: null,
    parameters: { Identity: 'shared@contoso.com' }, durationHours: 8, status: 'approved', createdAt: iso(now), pendingExpiresAt: iso(now + 864e5),
    approvals: [], approvedAt: iso(now), expiresAt: iso(now + 8 * 3600e3), decidedBy: 'alice@contoso.com', decidedAt: iso(now), comment: null,
  };
}

/** Commands as the classifier hands them to decide(). */
function command(name, params) {
  return { name, key: taskKey(name), params: new Map(Object.entries(params).map(([k, v]) => [k.toLowerCase(), v])) };
}

/** ns per call: median of BATCHES batches of ITER calls. */
function time(fn) {
  let sink = 0;
  for (let i = 0; i < ITER / 10; i++) sink += fn(i) ? 1 : 0; // warm-up
  const per = [];
  for (let b = 0; b < BATCHES; b++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < ITER; i++) sink += fn(i) ? 1 : 0;
    per.push(Number(process.hrtime.bigint() - t0) / ITER);
  }
  per.sort((x, y) => x - y);
  if (sink === -1) console.log(sink);
  return per[per.length >> 1];
}

/** V8 heap used and memory outside it (Buffers), after full collections, with the concurrent sweeper given time to finish. */
async function settledHeap() {
  for (let i = 0; i < 6; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 20));
  }
  const m = process.memoryUsage();
  return { heap: m.heapUsed, external: m.external };
}

const added = (before, after) => ({ heap: after.heap - before.heap, external: after.external - before.external });

/**
 * One heap measurement in this (fresh) process: `index` builds the hot-path grant index
 * (a GrantIndex, packed by user, as AccessService.remember keeps it) from requests already in memory;
 * `state` opens the embedded store seeded with the requests and loads an AccessService, i.e.
 * everything the gateway holds for them. Prints the bytes added.
 */
async function heapPart(part) {
  const now = Date.now();
  if (part === 'index') {
    // Built straight from the generator, each request parsed from JSON as a store hands it over
    // (randomUUID's ids are trees of string pieces; parsed ones are flat). The requests are not
    // kept: the figure is what the index itself holds.
    const before = await settledHeap();
    const byUser = new Map();
    for (const generated of otherUsersGrants(HEAP_GRANTS, LARGE[0], now)) {
      const r = JSON.parse(JSON.stringify(generated));
      const list = byUser.get(r.requester);
      if (list) list.push(grantOf(r));
      else byUser.set(r.requester, [grantOf(r)]);
    }
    const index = new GrantIndex();
    for (const [user, grants] of byUser) index.set(user, grants);
    byUser.clear();
    const after = await settledHeap();
    if (index.users !== HEAP_GRANTS / 5) throw new Error(`grants of ${index.users} users in the index, want ${HEAP_GRANTS / 5}`);
    return added(before, after);
  }
  const dir = await mkdtemp(join(tmpdir(), 'pamgate-micro-'));
  try {
    await seedJournal(dir, otherUsersGrants(HEAP_GRANTS, LARGE[0], now));
    const policies = policySet(LARGE[0]);
    const before = await settledHeap();
    const store = await openEmbeddedStore(dir);
    const service = new AccessService(store, noAudit, () => policies, () => now);
    await service.load();
    const after = await settledHeap();
    if (service.activeGrantCount() !== HEAP_GRANTS) throw new Error('grants not loaded');
    await store.close();
    return added(before, after);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const HEAP_PART = process.argv.find((a) => a.startsWith('--heap-part='))?.slice('--heap-part='.length);
if (HEAP_PART) {
  process.stdout.write(JSON.stringify(await heapPart(HEAP_PART)));
  process.exit(0);
}

// Heap first, each part in a fresh process (no garbage or bytecode flushing from other work in the numbers).
{
  const run = (part) => {
    const r = spawnSync(process.execPath, ['--expose-gc', '--no-flush-bytecode', fileURLToPath(import.meta.url), `--heap-part=${part}`, ...(QUICK ? ['--quick'] : [])], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`heap part ${part} failed: ${r.stderr}`);
    return JSON.parse(r.stdout);
  };
  const state = run('state');
  const index = run('index');
  const scale = 100_000 / HEAP_GRANTS;
  console.log(`\nheap for ${HEAP_GRANTS.toLocaleString('en-US')} active grants${scale !== 1 ? `, scaled ×${scale} to 100,000` : ''}:`);
  const show = (m) => `${mb(m.heap * scale)} V8 heap (${Math.round(m.heap / HEAP_GRANTS)} B/grant) + ${mb(m.external * scale)} outside it (${Math.round(m.external / HEAP_GRANTS)} B/grant)`;
  console.log(`  embedded store + AccessService (requests + grant index): ${show(state)}`);
  console.log(`  grant index alone (GrantIndex, hot path):                ${show(index)}`);
}

const rows = [];
for (const [count, grants] of [[10, 0], LARGE]) {
  const now = Date.now();
  const policies = policySet(count);
  const requests = [benchUserRequest(now), ...otherUsersGrants(grants, count, now)];
  const service = new AccessService(memoryStore(requests), noAudit, () => policies, () => now);
  await service.load();
  const identity = { user: BENCH_USER, amr: ['pwd'], expiresAt: null };
  const stranger = { user: 'nobody@contoso.com', amr: ['pwd'], expiresAt: null };
  const granted = [command('Add-MailboxPermission', { Identity: 'shared@contoso.com', User: BENCH_USER, AccessRights: 'ReadPermission' })];
  const ungated = [command('Get-Mailbox', { Identity: 'shared@contoso.com', ResultSize: 10 })];
  const denied = [command('Remove-Mailbox', { Identity: 'former.employee@contoso.com', Confirm: false })];
  if (decide(granted, policies, identity, service.grantsOf, now).action !== 'forward') throw new Error('bench grant does not hold');
  if (decide(denied, policies, identity, service.grantsOf, now).status !== 403) throw new Error('denied command is not denied');
  const label = `${policies.policies.size} policies, ${service.activeGrantCount()} grants`;
  rows.push([label, 'policiesFor(exact gated key)', time(() => policies.policiesFor('add-mailboxpermission') !== null)]);
  rows.push([label, 'policiesFor(ungated key: globs, cached)', time(() => policies.policiesFor('get-mailbox') === null)]);
  rows.push([label, 'grantsOf(user) (grant lookup)', time(() => service.grantsOf(BENCH_USER).length > 0)]);
  rows.push([label, 'grantsOf(user without grants)', time(() => service.grantsOf('nobody@contoso.com').length > 0)]);
  rows.push([label, 'decide(): ungated', time(() => decide(ungated, policies, identity, service.grantsOf, now).verdicts.length === 0)]);
  rows.push([label, 'decide(): gated, granted (param rules + scope)', time(() => decide(granted, policies, identity, service.grantsOf, now).action === 'forward')]);
  rows.push([label, 'decide(): gated, no grant (403)', time(() => decide(denied, policies, stranger, service.grantsOf, now).status === 403)]);
}

console.log('\n| state | operation | ns/op (median) |\n|:--|:--|--:|');
for (const [label, op, ns] of rows) console.log(`| ${label} | ${op} | ${ns.toFixed(1)} |`);

