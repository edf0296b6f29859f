// What TLS costs: the gateway, http-proxy and nginx each over plain HTTP and over HTTPS
// (terminating TLS with the same certificate; wrk keeps its connections alive, so handshakes are
// a start-up cost and the rows measure record encryption), for scenario (a) ungated and (b) gated
// + granted, interleaved in rounds. `npm run bench:https [-- options]`.
//
//   --rounds N  --duration S  --warmup S  --connections C   (defaults 3, 3, 1, 32)
//   --only a,b/https      run only these cells (scenario, scheme, target, or scenario/target/scheme)
//
// Topology as in bench/run.mjs: wrk and the counting upstream on CPU 0, the proxy under test on
// CPU 1 (taskset), loopback only. Every process started here is stopped at the end and on signals.
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { checkServerIdentity } from 'node:tls';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { APPROVER, BENCH_REQUEST, BENCH_USER, BODIES, JWT_SECRET, TENANT_PATH, policyYaml, token } from './fixtures.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '..');
const CLI = join(ROOT, 'dist', 'cli.js');
const CERT = join(ROOT, 'test', 'fixtures', 'localhost-cert.pem');
const KEY = join(ROOT, 'test', 'fixtures', 'localhost-key.pem');
const PRODUCT_NODE_FLAGS = ['--initial-old-space-size=192', '--no-memory-reducer'];

const { values: opt } = parseArgs({
  options: { rounds: { type: 'string' }, duration: { type: 'string' }, warmup: { type: 'string' }, connections: { type: 'string' }, only: { type: 'string' } },
  strict: true,
});
const ROUNDS = Number(opt.rounds ?? 3);
const DURATION = Number(opt.duration ?? 3);
const WARMUP = Number(opt.warmup ?? 1);
const CONNS = Number(opt.connections ?? 32);

const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
const TASKSET = has('taskset') && cpus().length >= 2;
const pinned = (cpu, argv) => (TASKSET ? ['taskset', '-c', String(cpu), ...argv] : argv);
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

const children = new Set();
function start(argv, env = {}, ipc = false) {
  const child = spawn(argv[0], argv.slice(1), { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe', ...(ipc ? ['ipc'] : [])] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}
async function stopAll() {
  await Promise.all(
    [...children].map(async (c) => {
      if (c.exitCode !== null || c.signalCode !== null) return;
      const exited = once(c, 'exit');
      c.kill('SIGTERM');
      const t = setTimeout(() => c.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(t);
    }),
  );
}
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => stopAll().then(() => process.exit(130)));

function firstLine(child, pick, timeoutMs = 60_000) {
  return new Promise((resolveLine, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error('timed out waiting for start-up')), timeoutMs);
    const onData = (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const hit = pick(buf.slice(0, i));
        buf = buf.slice(i + 1);
        if (hit !== null) {
          clearTimeout(timer);
          child.stdout.off('data', onData);
          child.stdout.resume();
          return resolveLine(hit);
        }
      }
    };
    child.stdout.setEncoding('utf8').on('data', onData);
    child.once('exit', (code) => reject(new Error(`exited with ${code}`)));
  });
}

async function freePort() {
  const srv = createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

async function waitForPort(port) {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise((r) => {
      const s = createServer().once('error', () => r(true)).listen(port, '127.0.0.1', () => s.close(() => r(false)));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on ${port}`);
}

/** POST JSON over http or https (trusting the bench certificate). */
function post(url, body, tok) {
  const data = JSON.stringify(body);
  const headers = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data), ...(tok ? { authorization: `Bearer ${tok}` } : {}) };
  if (url.startsWith('http:')) return fetch(url, { method: 'POST', headers, body: data }).then(async (r) => ({ status: r.status, json: await r.json().catch(() => null) }));
  return new Promise((resolvePost, reject) => {
    const req = httpsRequest(url, { method: 'POST', headers, ca: readFileSync(CERT), servername: 'localhost', checkServerIdentity: (_host, cert) => checkServerIdentity('localhost', cert), agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d) => (text += d));
      res.on('end', () => resolvePost({ status: res.statusCode, json: (() => { try { return JSON.parse(text); } catch { return null; } })() }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

async function startGateway(out, upstreamUrl, tls, tokens) {
  const dir = join(out, tls ? 'gateway-https' : 'gateway-http');
  await mkdir(join(dir, 'config'), { recursive: true });
  await writeFile(join(dir, 'config', 'policies.yaml'), policyYaml(10));
  const child = start(pinned(1, [process.execPath, ...PRODUCT_NODE_FLAGS, CLI, 'serve']), {
    NODE_ENV: 'production',
    HOST: '127.0.0.1',
    PORT: '0',
    ADMIN_PORT: '0',
    UPSTREAM_URL: upstreamUrl,
    PAMGATE_DATA_DIR: join(dir, 'data'),
    PAMGATE_CONFIG: join(dir, 'config', 'policies.yaml'),
    PAMGATE_JWT_SECRET: JWT_SECRET,
    ...(tls ? { PAMGATE_TLS_CERT: CERT, PAMGATE_TLS_KEY: KEY } : {}),
  });
  child.stderr.resume();
  const started = await firstLine(child, (line) => {
    try {
      const j = JSON.parse(line);
      return j.msg === 'pamgate started' ? j : null;
    } catch {
      return null;
    }
  });
  // The bench user holds an approved grant for (b), filed and approved over the control API.
  const created = await post(`${started.controlUrl}/api/requests`, BENCH_REQUEST, tokens.bench);
  const approved = await post(`${started.controlUrl}/api/requests/${created.json.id}/approve`, { comment: 'benchmark' }, tokens.approver);
  if (approved.json?.status !== 'approved') throw new Error(`grant for the bench user failed: ${JSON.stringify(approved)}`);
  return { child, url: started.proxyUrl };
}

async function startBaseline(upstreamUrl, tls) {
  const child = start(pinned(1, [process.execPath, join(HERE, 'baseline.mjs'), upstreamUrl, ...(tls ? [CERT, KEY] : [])]));
  child.stderr.resume();
  const url = await firstLine(child, (line) => (/^https?:\/\//.test(line) ? line.trim() : null));
  return { child, url };
}

/** One nginx (one worker) with a plain and a TLS server in front of the same kept-alive upstream pool. */
async function startNginx(out, upstreamUrl) {
  if (!has('nginx')) return null;
  const dir = join(out, 'nginx');
  await mkdir(join(dir, 'tmp'), { recursive: true });
  const [plain, secure] = [await freePort(), await freePort()];
  const up = new URL(upstreamUrl);
  const location = `location / { proxy_pass http://upstream_pool; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }`;
  await writeFile(
    join(dir, 'nginx.conf'),
    `${process.getuid?.() === 0 ? 'user root;\n' : ''}worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp/body; proxy_temp_path ${dir}/tmp/proxy; fastcgi_temp_path ${dir}/tmp/fastcgi; uwsgi_temp_path ${dir}/tmp/uwsgi; scgi_temp_path ${dir}/tmp/scgi;
  keepalive_requests 1000000;
  upstream upstream_pool { server ${up.hostname}:${up.port}; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:${plain}; ${location} }
  server { listen 127.0.0.1:${secure} ssl; ssl_certificate ${CERT}; ssl_certificate_key ${KEY}; ${location} }
}
`,
  );
  const child = start(pinned(1, ['nginx', '-p', dir, '-e', join(dir, 'error.log'), '-c', join(dir, 'nginx.conf')]));
  child.stdout.resume();
  child.stderr.resume();
  await waitForPort(plain);
  await waitForPort(secure);
  return { child, http: `http://127.0.0.1:${plain}`, https: `https://127.0.0.1:${secure}` };
}

function pidsOf(child) {
  const pids = [child.pid];
  try {
    const kids = readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim();
    if (kids) pids.push(...kids.split(/\s+/).map(Number));
  } catch {
    /* not Linux */
  }
  return pids;
}
function cpuTicks(pids) {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
      ticks += Number(f[11]) + Number(f[12]);
    } catch {
      /* gone */
    }
  }
  return ticks;
}

function wrk(url, scenario, seconds, tok) {
  const child = start(pinned(0, ['wrk', '-t1', `-c${CONNS}`, `-d${seconds}s`, '--timeout', '5s', '--latency', '-s', join(HERE, 'post.lua'), url + TENANT_PATH]), {
    BENCH_BODY: JSON.stringify(BODIES[scenario]),
    BENCH_TOKEN: scenario === 'a' ? '' : tok,
  });
  let stdout = '';
  child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
  child.stderr.resume();
  return new Promise((resolveRun, reject) =>
    child.once('exit', (code) => {
      const line = stdout.split('\n').find((l) => l.startsWith('BENCH_JSON '));
      if (code !== 0 || !line) return reject(new Error(`wrk failed (${code}): ${stdout}`));
      resolveRun(JSON.parse(line.slice(11)));
    }),
  );
}

async function measure(cell, tok) {
  if (WARMUP > 0) await wrk(cell.url, cell.scenario, WARMUP, tok);
  const pids = pidsOf(cell.child);
  const c0 = cpuTicks(pids);
  const t0 = process.hrtime.bigint();
  const w = await wrk(cell.url, cell.scenario, DURATION, tok);
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const ticks = cpuTicks(pids) - c0;
  return { rps: w.requests / (w.duration_us / 1e6), p50: w.p50_us / 1000, p99: w.p99_us / 1000, errors: w.status_errors + w.connect_errors + w.read_errors + w.write_errors + w.timeouts, cpu: (100 * ticks) / CLK_TCK / wall, usPerReq: (ticks / CLK_TCK / w.requests) * 1e6 };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const fmt = (x, d = 0) => (x === undefined || x === null || Number.isNaN(x) ? '—' : x.toFixed(d));

async function main() {
  if (!has('wrk')) throw new Error('wrk not found (Debian: apt-get install wrk)');
  const out = await mkdtemp(join(tmpdir(), 'pamgate-bench-https-'));
  try {
    const upstream = start(pinned(0, [process.execPath, join(HERE, 'upstream.mjs')]), {}, true);
    upstream.stdout.resume();
    upstream.stderr.resume();
    const [{ url: upstreamUrl }] = await once(upstream, 'message');
    const tokens = { bench: await token(BENCH_USER), approver: await token(APPROVER) };
    const targets = {
      'gateway/http': await startGateway(out, upstreamUrl, false, tokens),
      'gateway/https': await startGateway(out, upstreamUrl, true, tokens),
      'http-proxy/http': await startBaseline(upstreamUrl, false),
      'http-proxy/https': await startBaseline(upstreamUrl, true),
    };
    const nginx = await startNginx(out, upstreamUrl);
    if (nginx) {
      targets['nginx/http'] = { child: nginx.child, url: nginx.http };
      targets['nginx/https'] = { child: nginx.child, url: nginx.https };
    } else console.log('NOTICE: nginx not found (Debian: apt-get install nginx-light): the nginx rows are skipped');
    const keep = opt.only ? new Set(opt.only.split(',')) : null;
    const cells = [];
    for (const scenario of ['a', 'b'])
      for (const [key, t] of Object.entries(targets)) {
        const [target, scheme] = key.split('/');
        const id = `${scenario}/${key}`;
        if (keep && !keep.has(id) && !keep.has(scenario) && !keep.has(target) && !keep.has(scheme) && !keep.has(`${scenario}/${target}`)) continue;
        cells.push({ id, scenario, target, scheme, url: t.url, child: t.child });
      }
    // Every cell answers 200 once before measuring (over TLS: the certificate is checked).
    for (const c of cells) {
      const r = await post(c.url + TENANT_PATH, BODIES[c.scenario], c.scenario === 'a' ? null : tokens.bench);
      if (r.status !== 200) throw new Error(`${c.id}: preflight answered ${r.status}`);
    }
    const results = new Map(cells.map((c) => [c.id, []]));
    for (let round = 0; round < ROUNDS; round++) {
      for (const c of round % 2 ? [...cells].reverse() : cells) results.get(c.id).push(await measure(c, tokens.bench));
      console.error(`round ${round + 1}/${ROUNDS} done`);
    }
    report(cells, results);
  } finally {
    await stopAll();
    await rm(out, { recursive: true, force: true });
  }
}

function report(cells, results) {
  const row = (id) => {
    const runs = results.get(id);
    if (!runs) return null;
    const m = (k) => median(runs.map((r) => r[k]));
    return { rps: m('rps'), p50: m('p50'), p99: m('p99'), cpu: m('cpu'), usPerReq: m('usPerReq'), errors: runs.reduce((n, r) => n + r.errors, 0) };
  };
  const nodeVersion = process.version;
  const nginxVersion = has('nginx') ? spawnSync('nginx', ['-v'], { encoding: 'utf8' }).stderr.trim() : 'absent';
  console.log(`pamgate bench:https — ${new Date().toISOString()}; ${cpus().length} CPUs (${cpus()[0]?.model}); node ${nodeVersion}; ${nginxVersion}`);
  console.log(`method: ${ROUNDS} interleaved round(s) × ${DURATION}s per cell after ${WARMUP}s warm-up; wrk -t1 -c${CONNS} (keep-alive) on CPU 0 with the upstream; proxy on CPU 1${TASKSET ? '' : ' (NOT pinned)'}; medians\n`);
  console.log('| scen | target | scheme | req/s | p50 ms | p99 ms | proxy CPU% | CPU µs/req | errors |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const c of cells) {
    const r = row(c.id);
    console.log(`| ${c.scenario} | ${c.target} | ${c.scheme} | ${fmt(r.rps)} | ${fmt(r.p50, 2)} | ${fmt(r.p99, 2)} | ${fmt(r.cpu)} | ${fmt(r.usPerReq, 1)} | ${r.errors} |`);
  }
  console.log('\nratios (req/s, medians):');
  for (const s of ['a', 'b']) {
    const g = row(`${s}/gateway/https`);
    const gh = row(`${s}/gateway/http`);
    const hp = row(`${s}/http-proxy/https`);
    const hph = row(`${s}/http-proxy/http`);
    const ng = row(`${s}/nginx/https`);
    const ngh = row(`${s}/nginx/http`);
    if (g && hp) console.log(`- (${s}) gateway HTTPS / http-proxy HTTPS: ${fmt(g.rps / hp.rps, 3)}×   (over HTTP: ${gh && hph ? fmt(gh.rps / hph.rps, 3) : '—'}×)`);
    if (g && ng) console.log(`- (${s}) gateway HTTPS / nginx HTTPS: ${fmt(g.rps / ng.rps, 3)}×   (over HTTP: ${gh && ngh ? fmt(gh.rps / ngh.rps, 3) : '—'}×)`);
    const cost = (https, http, name) => https && http && console.log(`- (${s}) ${name}: HTTPS / HTTP ${fmt(https.rps / http.rps, 3)}×, CPU per request +${fmt(https.usPerReq - http.usPerReq, 1)} µs`);
    cost(g, gh, 'gateway');
    cost(hp, hph, 'http-proxy');
    cost(ng, ngh, 'nginx');
  }
}

main().catch(async (err) => {
  console.error(`bench:https failed: ${err.message}`);
  await stopAll();
  process.exit(1);
});
