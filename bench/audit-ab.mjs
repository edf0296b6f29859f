// The audit writer alone, two builds side by side: CPU and wall time per durable batch of 16
// task.executed events (the bench's typical batch), appended back to back in a fresh data dir on
// the filesystem given, rounds interleaved. Run it pinned to one CPU (taskset -c 1) so the writer's
// threadpool shares the CPU with its event loop as in the gateway.
// usage: node bench/audit-ab.mjs A/dist B/dist [DIR] [BATCHES] [ROUNDS]
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';

const [a, b, dir = 'bench/out', batchesArg = '2000', roundsArg = '6'] = process.argv.slice(2);
if (!a || !b) {
  process.stderr.write('usage: node bench/audit-ab.mjs A/dist B/dist [DIR] [BATCHES] [ROUNDS]\n');
  process.exit(2);
}
const BATCHES = Number(batchesArg);
const ROUNDS = Number(roundsArg);
const PER_BATCH = 16;
const builds = { A: resolve(a), B: resolve(b) };
const logs = {};
for (const [name, dist] of Object.entries(builds)) logs[name] = (await import(join(dist, 'audit/log.js'))).AuditLog;

const event = (i) => ({
  type: 'task.executed', actor: 'bench@contoso.com', task: 'Add-MailboxPermission', policy: 'mailbox-permissions',
  requestId: '2f1e0c7a-8a51-4a63-9b57-4b0d3c0e8f11', remote: '127.0.0.1',
  parameters: { identity: 'alice@contoso.com', user: 'eve@contoso.com', accessrights: 'ReadPermission' }, i,
});

await mkdir(resolve(dir), { recursive: true });
const results = { A: [], B: [] };
for (let round = 0; round < ROUNDS; round++) {
  for (const name of round % 2 === 0 ? ['A', 'B'] : ['B', 'A']) {
    const data = await mkdtemp(join(resolve(dir), 'audit-ab-'));
    const log = await logs[name].open({ dir: data });
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    for (let n = 0; n < BATCHES; n++) await Promise.all(Array.from({ length: PER_BATCH }, (_, i) => log.append(event(i))));
    const cpu = process.cpuUsage(cpu0);
    const wall = performance.now() - t0;
    await log.close();
    await rm(data, { recursive: true, force: true });
    results[name].push({ cpu: (cpu.user + cpu.system) / BATCHES, sys: cpu.system / BATCHES, wall: (wall * 1000) / BATCHES });
  }
}
const median = (xs) => xs.slice().sort((x, y) => x - y)[Math.floor(xs.length / 2)];
for (const name of ['A', 'B']) {
  const r = results[name];
  const m = (k) => median(r.map((x) => x[k]));
  console.log(`${name} ${builds[name]}: median over ${ROUNDS} rounds of ${BATCHES} batches × ${PER_BATCH} events: ${m('cpu').toFixed(0)} µs CPU per batch (${m('sys').toFixed(0)} in the kernel), ${m('wall').toFixed(0)} µs wall per batch; CPU per round ${r.map((x) => x.cpu.toFixed(0)).join(' ')}`);
}
