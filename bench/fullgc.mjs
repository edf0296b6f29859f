// How long one full GC of the large gateway's state takes (run with --expose-gc, pinned to one
// CPU): 10,000 policies and 100,000 grants of other users loaded in-process as the gateway loads
// them, then the CPU time of `gc()`, median of 8 (CPU, not wall time: a shared host's other jobs
// stretch the wall time). The (d) p99 is the full GCs that come at the start of load
// after idling (docs/design/005-node-flags.md); what a full GC costs is what they mark.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parsePolicyText } from '../dist/config/load.js';
import { AccessService } from '../dist/grants/service.js';
import { openEmbeddedStore } from '../dist/grants/store.js';
import { PolicySet } from '../dist/policy/compile.js';
import { JWT_SECRET, otherUsersGrants, policyYaml, seedJournal } from './fixtures.mjs';

const POLICIES = 10_000;
const GRANTS = 100_000;
if (!globalThis.gc) throw new Error('run with --expose-gc');

async function timedFullGcs(n) {
  const ms = [];
  for (let i = 0; i < n; i++) {
    await new Promise((r) => setTimeout(r, 50));
    const t0 = process.cpuUsage();
    gc();
    const used = process.cpuUsage(t0);
    ms.push((used.user + used.system) / 1e3);
  }
  ms.sort((a, b) => a - b);
  return { median: ms[n >> 1], min: ms[0], max: ms[n - 1], heapMiB: process.memoryUsage().heapUsed / 1048576 };
}
const show = (label, r) => console.log(`${label.padEnd(34)} full GC CPU median ${r.median.toFixed(1)} ms (min ${r.min.toFixed(1)}, max ${r.max.toFixed(1)}), heap used ${r.heapMiB.toFixed(1)} MiB`);

show('node alone', await timedFullGcs(8));
// As the gateway holds them: the compiled set, not the parse result.
const policies = (() => {
  const r = parsePolicyText(policyYaml(POLICIES), 'policies.yaml', { PAMGATE_JWT_SECRET: JWT_SECRET });
  if (!r.ok) throw new Error(JSON.stringify(r.errors.slice(0, 3)));
  return new PolicySet(r.config);
})();
show(`+ ${POLICIES.toLocaleString('en-US')} policies`, await timedFullGcs(8));
const dir = await mkdtemp(join(tmpdir(), 'pamgate-fullgc-'));
try {
  const now = Date.now();
  await seedJournal(dir, otherUsersGrants(GRANTS, POLICIES, now));
  const store = await openEmbeddedStore(dir);
  const service = new AccessService(store, { append: async () => undefined }, () => policies, () => now);
  await service.load();
  if (service.activeGrantCount() !== GRANTS) throw new Error('grants not loaded');
  show(`+ store and ${GRANTS.toLocaleString('en-US')} grants`, await timedFullGcs(8));
  await store.close();
} finally {
  await rm(dir, { recursive: true, force: true });
}
