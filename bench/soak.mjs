// Soak under hostile load: can one client stop everyone else?
//
//   npm run build && node bench/soak.mjs [--seconds 60] [--flood 4] [--p99-ms 50]
//
// One gateway process (dist/cli.js serve) in front of the counting demo upstream. For the whole
// run, in worker threads:
//   - a flooder sends gated calls that are refused (half with no token, half with a token and no
//     grant), each with a 1 MB parameter, on --flood keep-alive connections;
//   - an abuser with a valid token loops create → cancel on the control API, alternating the
//     largest inputs the API accepts and far larger ones, and never waits for its rate limit;
// while the main thread, as a second client (another user, from the same address), alternates an
// ungated call and a granted gated call, one at a time, and records their latency. It prints the p50/p99 of that client, the
// gateway's resident memory and the data dir's size over time, and exits 1 when the p99 is
// over --p99-ms, the data dir grows faster than --max-dir-mib-per-min, or resident memory ends
// over --max-rss-mib.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { Agent, request } from 'undici';
import { SignJWT } from 'jose';

const SECRET = 'soak-secret-0123456789abcdef-not-for-production';
const INVOKE = '/adminapi/beta/contoso.onmicrosoft.com/InvokeCommand';
const POLICIES = `version: 1
settings:
  defaultApproverGroup: pam-approvers
identity:
  jwt:
    secret: \${PAMGATE_JWT_SECRET}
groups:
  pam-approvers: [alice@contoso.com, bob@contoso.com]
policies:
  - id: mailbox-permissions
    task: Add-MailboxPermission
    parameters:
      AccessRights: { oneOf: [ReadPermission] }
  - id: mailbox-removal
    task: Remove-Mailbox
  - id: journal-rules
    task: New-JournalRule
    requireReason: false
`;

function token(user) {
  return new SignJWT({ upn: user }).setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setExpirationTime('2h').sign(new TextEncoder().encode(SECRET));
}
const invokeBody = (cmdlet, params) => JSON.stringify({ CmdletInput: { CmdletName: cmdlet, Parameters: params } });

if (!isMainThread) {
  const { role, proxy, control, connections, until } = workerData;
  if (role === 'flood') await flood(proxy, connections, until);
  else await abuse(control, until);
} else {
  await main();
}

async function flood(proxy, connections, until) {
  const agent = new Agent({ connections, pipelining: 1 });
  const big = 'x'.repeat(1024 * 1024 - 200);
  const eve = `Bearer ${await token('eve@contoso.com')}`;
  const bodies = [invokeBody('Remove-Mailbox', { Identity: big }), invokeBody('New-JournalRule', { Name: big })];
  const counts = {};
  let i = 0;
  const loop = async () => {
    while (Date.now() < until) {
      const n = i++;
      const headers = { 'content-type': 'application/json', ...(n % 2 ? { authorization: eve } : {}) };
      try {
        const r = await request(`${proxy}${INVOKE}`, { method: 'POST', body: bodies[n % 2], headers, dispatcher: agent });
        await r.body.dump();
        counts[r.statusCode] = (counts[r.statusCode] ?? 0) + 1;
      } catch (err) {
        counts[err.code ?? 'error'] = (counts[err.code ?? 'error'] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: connections }, loop));
  await agent.close();
  parentPort.postMessage({ role: 'flood', counts });
}

async function abuse(control, until) {
  const agent = new Agent({ connections: 2 });
  const auth = `Bearer ${await token('mallory@contoso.com')}`;
  const call = async (method, path, body) => {
    const r = await request(`${control}${path}`, { method, headers: { authorization: auth, 'content-type': 'application/json' }, body: body && JSON.stringify(body), dispatcher: agent });
    const text = await r.body.text();
    return { status: r.statusCode, body: text ? JSON.parse(text) : null };
  };
  const huge = { reason: 'r'.repeat(2000), parameters: Object.fromEntries(Array.from({ length: 58 }, (_, k) => [`P${k}`, 'v'.repeat(1000)])) };
  const counts = {};
  let n = 0;
  while (Date.now() < until) {
    const body = n++ % 2 ? { task: 'New-JournalRule', ...huge } : { task: 'New-JournalRule', reason: 'soak: the largest ordinary request', parameters: { Name: 'n'.repeat(200) } };
    try {
      const created = await call('POST', '/api/requests', body);
      counts[`create ${created.status}`] = (counts[`create ${created.status}`] ?? 0) + 1;
      if (created.status === 201) {
        const canceled = await call('POST', `/api/requests/${created.body.id}/cancel`);
        counts[`cancel ${canceled.status}`] = (counts[`cancel ${canceled.status}`] ?? 0) + 1;
      }
    } catch (err) {
      counts[err.code ?? 'error'] = (counts[err.code ?? 'error'] ?? 0) + 1;
    }
  }
  await agent.close();
  parentPort.postMessage({ role: 'abuse', counts });
}

async function main() {
  const { values: opt } = parseArgs({
    options: {
      seconds: { type: 'string', default: '60' },
      flood: { type: 'string', default: '4' },
      'p99-ms': { type: 'string', default: '50' },
      'max-rss-mib': { type: 'string', default: '300' },
      'max-dir-mib-per-min': { type: 'string', default: '20' },
    },
  });
  const seconds = Number(opt.seconds);
  const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
  const dir = await mkdtemp(join(tmpdir(), 'pamgate-soak-'));
  const config = join(dir, 'policies.yaml');
  await writeFile(config, POLICIES);
  const dataDir = join(dir, 'data');

  const upstream = spawn(process.execPath, [fileURLToPath(new URL('../dist/demo/upstream.js', import.meta.url)), '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const upstreamUrl = (await firstLine(upstream.stdout)).trim();
  const [port, adminPort] = [18_000 + Math.floor(Math.random() * 2000), 20_000 + Math.floor(Math.random() * 2000)];
  const gw = spawn(process.execPath, [cli, 'serve', '--config', config], {
    env: { ...process.env, PORT: String(port), ADMIN_PORT: String(adminPort), HOST: '127.0.0.1', UPSTREAM_URL: upstreamUrl, PAMGATE_DATA_DIR: dataDir, PAMGATE_JWT_SECRET: SECRET, PAMGATE_CONFIG_WATCH: 'off', LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const proxy = `http://127.0.0.1:${port}`;
  const control = `http://127.0.0.1:${adminPort}`;
  try {
    await waitReady(control);
    // The measuring client's grant: bob files, alice approves.
    const bob = `Bearer ${await token('bob@contoso.com')}`;
    const alice = `Bearer ${await token('alice@contoso.com')}`;
    const created = await json(control, 'POST', '/api/requests', bob, { task: 'Add-MailboxPermission', reason: 'soak: the measuring client', durationHours: 2 });
    await json(control, 'POST', `/api/requests/${created.id}/approve`, alice, {});

    const before = { rss: await rss(control), dir: await dirBytes(dataDir) };
    const until = Date.now() + seconds * 1000;
    const self = fileURLToPath(import.meta.url);
    const workers = [
      new Worker(self, { workerData: { role: 'flood', proxy, connections: Number(opt.flood), until } }),
      new Worker(self, { workerData: { role: 'abuse', control, until } }),
    ];
    const reports = workers.map((w) => once(w, 'message').then(([m]) => m));

    const agent = new Agent({ connections: 1 });
    const latencies = { ungated: [], granted: [] };
    const statuses = {};
    const samples = [];
    let nextSample = Date.now();
    const ungated = invokeBody('Get-Mailbox', { Identity: 'shared@contoso.com' });
    const granted = invokeBody('Add-MailboxPermission', { Identity: 'shared@contoso.com', User: 'x@contoso.com', AccessRights: 'ReadPermission' });
    for (let i = 0; Date.now() < until; i++) {
      const kind = i % 2 ? 'granted' : 'ungated';
      const t0 = performance.now();
      const r = await request(`${proxy}${INVOKE}`, { method: 'POST', body: kind === 'granted' ? granted : ungated, headers: { 'content-type': 'application/json', authorization: bob }, dispatcher: agent });
      await r.body.dump();
      latencies[kind].push(performance.now() - t0);
      statuses[`${kind} ${r.statusCode}`] = (statuses[`${kind} ${r.statusCode}`] ?? 0) + 1;
      if (Date.now() >= nextSample) {
        samples.push({ t: Math.round((Date.now() - (until - seconds * 1000)) / 1000), rss: await rss(control), dir: await dirBytes(dataDir) });
        nextSample += 10_000;
      }
      await sleep(5);
    }
    const [floodReport, abuseReport] = await Promise.all(reports);
    await agent.close();
    const after = { rss: await rss(control), dir: await dirBytes(dataDir) };

    const mib = (b) => `${(b / 1048576).toFixed(1)} MiB`;
    const all = [...latencies.ungated, ...latencies.granted];
    console.log(`soak: ${seconds} s, flood on ${opt.flood} connections, one create/cancel abuser, one measuring client`);
    console.log(`flooder answers: ${JSON.stringify(floodReport.counts)}`);
    console.log(`abuser answers:  ${JSON.stringify(abuseReport.counts)}`);
    console.log(`measuring client: ${JSON.stringify(statuses)}`);
    for (const [name, list] of Object.entries({ ...latencies, all })) console.log(`  ${name.padEnd(8)} n=${String(list.length).padStart(5)}  p50 ${pct(list, 50).toFixed(1)} ms  p99 ${pct(list, 99).toFixed(1)} ms  max ${Math.max(...list).toFixed(1)} ms`);
    console.log('resident memory and data dir over time:');
    for (const s of [{ t: 'start', ...before }, ...samples, { t: 'end', ...after }]) console.log(`  ${String(s.t).padStart(5)}  rss ${mib(s.rss).padStart(10)}  data dir ${mib(s.dir).padStart(10)}`);

    const dirPerMin = ((after.dir - before.dir) / 1048576) * (60 / seconds);
    const failures = [];
    const okStatuses = Object.keys(statuses).every((k) => k.endsWith(' 200'));
    if (!okStatuses) failures.push(`the measuring client got answers other than 200: ${JSON.stringify(statuses)}`);
    if (pct(all, 99) > Number(opt['p99-ms'])) failures.push(`p99 ${pct(all, 99).toFixed(1)} ms is over ${opt['p99-ms']} ms`);
    if (dirPerMin > Number(opt['max-dir-mib-per-min'])) failures.push(`the data dir grew ${dirPerMin.toFixed(1)} MiB/min, over ${opt['max-dir-mib-per-min']}`);
    if (after.rss > Number(opt['max-rss-mib']) * 1048576) failures.push(`resident memory ${mib(after.rss)} is over ${opt['max-rss-mib']} MiB`);
    console.log(failures.length ? `FAIL\n- ${failures.join('\n- ')}` : `ok: p99 ${pct(all, 99).toFixed(1)} ms, data dir +${dirPerMin.toFixed(2)} MiB/min, resident ${mib(after.rss)}`);
    process.exitCode = failures.length ? 1 : 0;
  } finally {
    gw.kill('SIGTERM');
    upstream.kill('SIGTERM');
    await Promise.all([once(gw, 'exit'), once(upstream, 'exit')]);
    await rm(dir, { recursive: true, force: true });
  }
}

function pct(list, p) {
  if (list.length === 0) return NaN;
  const sorted = [...list].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function rss(control) {
  const text = await (await fetch(`${control}/metrics`)).text();
  return Number(/^process_resident_memory_bytes (\d+)/m.exec(text)?.[1] ?? NaN);
}

async function dirBytes(path) {
  let total = 0;
  for (const e of await readdir(path, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += (await stat(join(e.parentPath ?? e.path, e.name))).size;
  }
  return total;
}

async function json(base, method, path, auth, body) {
  const r = await fetch(`${base}${path}`, { method, headers: { authorization: auth, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const out = await r.json();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(out)}`);
  return out;
}

async function waitReady(control) {
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(`${control}/readyz`)).ok) return;
    } catch {}
    await sleep(100);
  }
  throw new Error('the gateway did not become ready in 10 s');
}

function firstLine(stream) {
  return new Promise((resolve) => {
    let out = '';
    stream.setEncoding('utf8');
    stream.on('data', (d) => {
      out += d;
      if (out.includes('\n')) resolve(out.split('\n')[0]);
    });
  });
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}
