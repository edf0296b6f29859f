// Side-by-side benchmark of the gateway's data path (issue 5). `npm run bench [-- options]`.
//
//   (no option)      full run: every scenario × target in interleaved rounds, then bench/micro.mjs
//   --smoke          a few seconds: one short round, small micro run; proves the harness works
//   --micro          only the microbenchmarks
//   --no-micro       skip the microbenchmarks
//   --profile        CPU profile (node --cpu-prof) of the gateway under scenario b (--scenario X), summarised
//   --rounds N  --duration S  --warmup S  --connections C   (defaults 10, 3, 2, 32)
//   --run-warmup S   unmeasured load for S seconds right before every measured run (default 0)
//   --keep           keep the gateways' data dirs (audit files) under bench/out/
//   --only a,b/gateway,http-proxy   run only these cells (scenario, target or scenario/target)
//   --ab DIST/cli.js  also measure a second gateway build as target "gateway-B" (A/B test a change)
//   --ab-node-args="FLAGS"  gateway-B runs with these node flags (alone: the same build, other flags)
//   --gateway-node-args="FLAGS"  node flags for the gateways instead of the product's (PRODUCT_NODE_FLAGS)
//   --with-c-baseline also run http-proxy on scenario (c) (the (c) target compares with http-proxy's (a))
//   --max-foreign P  rerun a measurement when other processes used more than P% of a CPU (default 10)
//   --max-steal P    rerun a measurement when the hypervisor took more than P% of CPU 0 or 1 (steal; default 5)
//   --fresh-instances  start the node proxies afresh for every round (default: one process per target for the run)
//   --data-root DIR  diagnostics: the gateways' data dirs on DIR (e.g. /dev/shm: no disk; NOT durable, flagged in the report)
//
// Topology (2+ CPUs): wrk and the counting upstream on CPU 0, the proxy under test on CPU 1,
// only loopback addresses. Every process started here is stopped in `finally` and on signals.
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, readFileSync, readdirSync, existsSync } from 'node:fs';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer, connect } from 'node:net';
import { cpus } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { APPROVER, BENCH_REQUEST, BENCH_USER, BODIES, CMDLET, JWT_SECRET, TENANT_PATH, otherUsersGrants, policyYaml, seedJournal, token } from './fixtures.mjs';
import { inclusive, summariseProfile, windowed } from './profile.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '..');
const CLI = join(ROOT, 'dist', 'cli.js');

const { values: opt } = parseArgs({
  options: {
    smoke: { type: 'boolean', default: false },
    micro: { type: 'boolean', default: false },
    'no-micro': { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    rounds: { type: 'string' },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    'run-warmup': { type: 'string' },
    connections: { type: 'string' },
    policies: { type: 'string' },
    grants: { type: 'string' },
    keep: { type: 'boolean', default: false },
    'max-foreign': { type: 'string' },
    'max-steal': { type: 'string' },
    only: { type: 'string' },
    scenario: { type: 'string' },
    ab: { type: 'string' },
    'ab-node-args': { type: 'string' },
    'gateway-node-args': { type: 'string' },
    'with-c-baseline': { type: 'boolean', default: false },
    'data-root': { type: 'string' },
    'fresh-instances': { type: 'boolean', default: false },
  },
  strict: true,
});

const SMOKE = opt.smoke;
const ROUNDS = Number(opt.rounds ?? (SMOKE ? 1 : 10));
const DURATION = Number(opt.duration ?? (SMOKE ? 1 : 3));
const WARMUP = Number(opt.warmup ?? (SMOKE ? 0 : 2));
/** Seconds of unmeasured load right before every measured run (each cell from steady state, not from idle). */
const RUN_WARMUP = Number(opt['run-warmup'] ?? 0);
const CONNS = Number(opt.connections ?? 32);
/** Every round on newly started node proxies (--fresh-instances), instead of one process per target for the run. */
const FRESH = opt['fresh-instances'];
// Smoke mode proves the harness, not the numbers: (d) gets a tenth of the state so it starts fast.
const LARGE_POLICIES = Number(opt.policies ?? (SMOKE ? 1_000 : 10_000));
const LARGE_GRANTS = Number(opt.grants ?? (SMOKE ? 10_000 : 100_000));
/** Node flags the product starts the gateway with (Dockerfile CMD, `npm start`; test/unit/node-flags.test.ts keeps them equal with docker-compose.yml's): measured as shipped. */
const PRODUCT_NODE_FLAGS = ['--initial-old-space-size=192', '--no-memory-reducer'];
const GATEWAY_NODE_FLAGS = opt['gateway-node-args'] !== undefined ? words(opt['gateway-node-args']) : PRODUCT_NODE_FLAGS;

// ---------------------------------------------------------------------------------------------
// processes

const children = new Set();
let cleaning = null;

function has(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}
const TASKSET = has('taskset') && cpus().length >= 2;

/** argv pinned to `cpu` with taskset (exec's the command, so the pid is the command's). */
function pinned(cpu, argv) {
  return TASKSET ? ['taskset', '-c', String(cpu), ...argv] : argv;
}

function start(name, argv, { env, ipc = false, log } = {}) {
  const child = spawn(argv[0], argv.slice(1), {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe', ...(ipc ? ['ipc'] : [])],
  });
  child.benchName = name;
  children.add(child);
  child.once('exit', () => children.delete(child));
  if (log) {
    const out = createWriteStream(log);
    child.stdout.pipe(out);
    child.stderr.pipe(out);
  }
  return child;
}

async function stop(child, graceMs = 5_000) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

function stopAll() {
  cleaning ??= Promise.all([...children].map((c) => stop(c)));
  return cleaning;
}

process.on('exit', () => {
  // Last resort (uncaught error, stdout gone): nginx workers too, or they outlive their master.
  for (const c of children) {
    for (const pid of pidsOf(c).reverse()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  }
});
process.stdout.on('error', () => void stopAll().finally(() => process.exit(1)));
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    process.stderr.write(`\nbench: ${sig}, stopping every process it started\n`);
    void stopAll().finally(() => process.exit(130));
  });
}

function firstLine(child, match, timeoutMs = 60_000) {
  return new Promise((resolveLine, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`${child.benchName}: no startup line within ${timeoutMs} ms`)), timeoutMs);
    const onData = (d) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const hit = match(line);
        if (hit) {
          clearTimeout(timer);
          child.stdout.off('data', onData);
          resolveLine(hit);
          return;
        }
      }
    };
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', onData);
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`${child.benchName} exited during startup (${code ?? sig}); see its log`));
    });
  });
}

async function freePort() {
  const srv = createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

async function waitForPort(port, timeoutMs = 10_000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise((r) => {
      const s = connect(port, '127.0.0.1', () => {
        s.destroy();
        r(true);
      });
      s.on('error', () => r(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nothing listens on 127.0.0.1:${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// ---------------------------------------------------------------------------------------------
// the pieces under test

async function startUpstream(out) {
  const child = start('upstream', pinned(0, [process.execPath, join(HERE, 'upstream.mjs')]), { ipc: true, log: join(out, 'upstream.log') });
  const [msg] = await once(child, 'message');
  let seq = 0;
  const pending = new Map();
  child.on('message', (m) => {
    const done = pending.get(m.id);
    if (done) {
      pending.delete(m.id);
      done(m);
    }
  });
  return {
    child,
    url: msg.url,
    stats: (reset = false) =>
      new Promise((r) => {
        const id = ++seq;
        pending.set(id, r);
        child.send({ cmd: 'stats', id, reset });
      }),
  };
}

function words(text) {
  return text.split(/\s+/).filter(Boolean);
}

async function startGateway(name, out, upstreamUrl, policyCount, grantCount, { cpuProf = null, cli = CLI, flags = GATEWAY_NODE_FLAGS } = {}) {
  // --data-root (diagnostics only): the data dirs, audit files included, on another filesystem.
  const dataDir = opt['data-root'] ? join(resolve(opt['data-root']), basename(out), name) : join(out, name);
  // The policy file lives apart from the data dir, as in a deployment: the gateway watches the
  // policy file's directory, and audit writes next to it would wake that watcher on every batch.
  const configDir = join(out, `${name}-config`);
  await mkdir(dataDir, { recursive: true });
  await mkdir(configDir, { recursive: true });
  const configPath = join(configDir, 'policies.yaml');
  await writeFile(configPath, policyYaml(policyCount));
  let seeded = 0;
  if (grantCount > 0) seeded = await seedJournal(dataDir, otherUsersGrants(grantCount, policyCount, Date.now()));
  const nodeArgs = [...flags, ...(cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${cpuProf}`] : [])];
  const t0 = Date.now();
  const child = start(name, pinned(1, [process.execPath, ...nodeArgs, cli, 'serve']), {
    env: {
      NODE_ENV: 'production',
      HOST: '127.0.0.1',
      PORT: '0',
      ADMIN_PORT: '0',
      UPSTREAM_URL: upstreamUrl,
      PAMGATE_DATA_DIR: dataDir,
      PAMGATE_CONFIG: configPath,
      PAMGATE_JWT_SECRET: JWT_SECRET,
    },
  });
  const log = createWriteStream(join(out, `${name}.log`));
  child.stderr.pipe(log);
  const started = await firstLine(child, (line) => {
    log.write(line + '\n');
    try {
      const j = JSON.parse(line);
      return j.msg === 'pamgate started' ? j : null;
    } catch {
      return null;
    }
  }, 120_000);
  child.stdout.pipe(log);
  return { name, child, dataDir, proxyUrl: started.proxyUrl, controlUrl: started.controlUrl, policies: started.policies, seeded, startMs: Date.now() - t0 };
}

async function startBaseline(out, upstreamUrl) {
  const child = start('http-proxy', pinned(1, [process.execPath, join(HERE, 'baseline.mjs'), upstreamUrl]), { log: null });
  const url = await firstLine(child, (line) => (line.startsWith('http://') ? line.trim() : null));
  child.stdout.resume();
  child.stderr.pipe(createWriteStream(join(out, 'http-proxy.log')));
  return { child, url };
}

async function startNginx(out, upstreamUrl) {
  if (!has('nginx')) return null;
  const dir = join(out, 'nginx');
  await mkdir(join(dir, 'tmp'), { recursive: true });
  const port = await freePort();
  const up = new URL(upstreamUrl);
  const conf = `${process.getuid?.() === 0 ? 'user root;\n' : ''}worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  keepalive_requests 1000000;
  upstream pamgate_upstream {
    server ${up.hostname}:${up.port};
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://pamgate_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
  }
}
`;
  await writeFile(join(dir, 'nginx.conf'), conf);
  const child = start('nginx', pinned(1, ['nginx', '-p', dir, '-e', join(dir, 'error.log'), '-c', join(dir, 'nginx.conf')]), { log: join(dir, 'stdout.log') });
  await waitForPort(port);
  return { child, url: `http://127.0.0.1:${port}` };
}

// ---------------------------------------------------------------------------------------------
// measuring

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** The pid and, for nginx, its workers. */
function pidsOf(child) {
  const pids = [child.pid];
  try {
    const kids = readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim();
    if (kids) pids.push(...kids.split(/\s+/).map(Number));
  } catch {
    /* not Linux, or gone */
  }
  return pids;
}

/** utime + stime of every thread of the processes, in clock ticks. */
function cpuTicks(pids) {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]); // fields 14 and 15 of proc(5)
    } catch {
      /* gone */
    }
  }
  return ticks;
}

/**
 * A node process's CPU split four ways, in clock ticks: the main thread's user and system time,
 * and the other threads' (V8's GC helpers, libuv's pool, which runs the audit's durable writes).
 */
function threadTicks(pid) {
  const split = { mainUser: 0, mainSys: 0, otherUser: 0, otherSys: 0 };
  let tids;
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return split;
  }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const main = Number(tid) === pid;
      split[main ? 'mainUser' : 'otherUser'] += Number(f[11]);
      split[main ? 'mainSys' : 'otherSys'] += Number(f[12]);
    } catch {
      /* thread gone */
    }
  }
  return split;
}

/** user+nice+system ticks of every CPU (irq/softirq left out: our own network traffic lands there). */
/** Steal ticks (time the hypervisor ran other guests while this one wanted the CPU) of CPUs 0 and 1, from /proc/stat. */
function stealTicks() {
  const out = [0, 0];
  for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const m = /^cpu([01]) /.exec(line);
    if (m) out[Number(m[1])] = Number(line.split(/\s+/)[8] ?? 0);
  }
  return out;
}

/** The larger share of CPU 0's and CPU 1's time stolen between two stealTicks() readings, in %. */
function stealPct(before, after, wallSeconds) {
  return Math.max(...after.map((t, i) => (100 * (t - before[i])) / CLK_TCK / wallSeconds));
}

function systemBusyTicks() {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/);
  return Number(line[1]) + Number(line[2]) + Number(line[3]);
}

/** This process plus its reaped children (wrk runs are counted once waited for). */
function selfTicks() {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
}

/** Upstream stats once its execution counts stop moving (two equal readings 50 ms apart, at most 3 s). */
async function settle(upstream) {
  const total = (st) => Object.values(st.executed).reduce((a, b) => a + b, 0);
  let last = await upstream.stats();
  for (let i = 0; i < 60; i++) {
    await new Promise((r) => setTimeout(r, 50));
    const next = await upstream.stats();
    if (total(next) === total(last)) return next;
    last = next;
  }
  return last;
}

/** A gateway's /metrics, and a reader of one sample from it (0 when absent). */
async function scrape(gw) {
  const text = await (await fetch(`${gw.controlUrl}/metrics`)).text();
  return (name, labels = '') => {
    const re = new RegExp(`^${name}${labels.replace(/[{}"+.]/g, '\\$&')}\\s+(\\S+)$`, 'm');
    const m = re.exec(text);
    return m ? Number(m[1]) : 0;
  };
}

async function gatewayMetrics(gw) {
  const get = await scrape(gw);
  return {
    events: get('pamgate_audit_events_total'),
    batches: get('pamgate_audit_fsync_batches_total'),
    maxBatch: get('pamgate_audit_fsync_max_batch'),
    forward200: get('pamgate_proxy_requests_total', '{outcome="forward",status="200"}'),
    pass: get('pamgate_proxy_requests_total', '{outcome="pass",status="0"}') + get('pamgate_proxy_requests_total', '{outcome="forward",status="0"}'),
    block403: get('pamgate_proxy_requests_total', '{outcome="block",status="403"}'),
    errors: get('pamgate_proxy_requests_total', '{outcome="error",status="500"}') + get('pamgate_proxy_requests_total', '{outcome="error",status="503"}'),
    gcSeconds: ['minor', 'major', 'incremental', 'weakcb'].reduce((n, kind) => n + get('nodejs_gc_duration_seconds_sum', `{kind="${kind}"}`), 0),
    majorGcs: get('nodejs_gc_duration_seconds_count', '{kind="major"}'),
    // Cumulative counts of pamgate_audit_write_seconds, by bucket upper bound (seconds).
    writeBuckets: WRITE_BUCKETS.map((le) => get('pamgate_audit_write_seconds_bucket', `{le="${le}"}`)),
  };
}

/** One line per gateway: its resident set and V8 heap, from prom-client's process metrics. */
async function memoryLines(gateways) {
  const mib = (b) => `${fmt(b / 1048576, 0)} MiB`;
  const out = [];
  for (const gw of gateways) {
    const get = await scrape(gw);
    out.push(`- ${gw.name}: resident ${mib(get('process_resident_memory_bytes'))}, V8 heap ${mib(get('nodejs_heap_size_used_bytes'))} used / ${mib(get('nodejs_heap_size_total_bytes'))} reserved`);
  }
  return out;
}

const WRITE_BUCKETS = ['0.0005', '0.001', '0.002', '0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '1', '+Inf'];

/** The filesystem type a path lives on, from /proc/mounts (longest mount point that prefixes it). */
function fsType(path) {
  const abs = resolve(path);
  let best = { dir: '', type: 'unknown' };
  for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const [, dir, type] = line.split(' ');
    if (dir && type && (abs === dir || abs.startsWith(dir === '/' ? '/' : dir + '/')) && dir.length > best.dir.length) best = { dir, type };
  }
  return best.type;
}

/** Index in WRITE_BUCKETS of 5 ms: a round whose audit writes all stayed at or under it had a quick disk. */
const QUICK_WRITE_BUCKET = WRITE_BUCKETS.indexOf('0.005');

/** Audit writes of one run that took longer than WRITE_BUCKETS[i]. */
function slowWrites(run, i) {
  const b = run.audit?.writeBuckets;
  return b ? b.at(-1) - b[i] : 0;
}

/** The disk alone (bench/disk.mjs on the audit files' filesystem, pinned to the proxy's CPU), as report lines. */
async function diskProbe(dir) {
  const child = start('disk', pinned(1, [process.execPath, join(HERE, 'disk.mjs'), dir, SMOKE ? '1' : '4']));
  let text = '';
  child.stdout.on('data', (d) => (text += d));
  const [code] = await once(child, 'close');
  if (code !== 0) return [`- disk probe failed (exit ${code})`];
  return JSON.parse(text).map((r) =>
    `- ${r.mode}, ${r.inFlight} write${r.inFlight > 1 ? 's' : ''} in flight: ${fmt(r.writesPerSec)} writes/s, ${fmt(r.cpuUsPerWrite)} µs CPU each; each took p50 ${fmt(r.p50, 2)}, p99 ${fmt(r.p99, 2)}, p99.9 ${fmt(r.p999, 2)}, max ${fmt(r.max, 1)} ms`);
}

/** The q-quantile of durable-write time over runs, as "≤ bucket bound" in ms, from histogram deltas. */
function writeQuantile(runs, q) {
  const counts = WRITE_BUCKETS.map((_, i) => runs.reduce((n, r) => n + (r.audit?.writeBuckets[i] ?? 0), 0));
  const total = counts.at(-1);
  if (!total) return null;
  const i = counts.findIndex((c) => c >= q * total);
  return WRITE_BUCKETS[i] === '+Inf' ? '>1000' : `≤${Number(WRITE_BUCKETS[i]) * 1000}`;
}

function runWrk(url, scenario, seconds, tokens) {
  const argv = pinned(0, ['wrk', '-t1', `-c${CONNS}`, `-d${seconds}s`, '--timeout', '5s', '--latency', '-s', join(HERE, 'post.lua'), url + TENANT_PATH]);
  const child = start(`wrk-${scenario}`, argv, { env: { BENCH_BODY: JSON.stringify(BODIES[scenario]), BENCH_TOKEN: scenario === 'a' ? '' : tokens.bench } });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
  return new Promise((resolveRun, reject) => {
    child.once('exit', (code) => {
      const line = stdout.split('\n').find((l) => l.startsWith('BENCH_JSON '));
      if (code !== 0 || !line) return reject(new Error(`wrk failed (${code}): ${stderr || stdout}`));
      resolveRun(JSON.parse(line.slice('BENCH_JSON '.length)));
    });
  });
}

/**
 * One wrk run against one cell. The machine may be shared: CPU time spent by processes that
 * are not the bench's (user+system, all CPUs) is measured, and so is the time the hypervisor
 * gave the bench's two CPUs to other guests (steal); a run that lost more than MAX_FOREIGN of a
 * CPU to the first, or more than MAX_STEAL of either CPU to the second, is run again (up to
 * RETRIES times; the count is reported).
 */
const MAX_FOREIGN = Number(opt['max-foreign'] ?? 10);
const MAX_STEAL = Number(opt['max-steal'] ?? 5);
const RETRIES = 3;
let retryBudget = 0; // set from the plan: at most a sixth more runs than planned
async function measure(cell, seconds, ctx) {
  let r;
  for (let attempt = 0; ; attempt++) {
    r = await measureOnce(cell, seconds, ctx);
    r.retries = attempt;
    if ((r.foreign <= MAX_FOREIGN && r.steal <= MAX_STEAL) || attempt >= RETRIES || retryBudget <= 0) break;
    retryBudget--;
  }
  return r;
}

/** Waits (bounded by quietBudgetMs over the whole run) until other processes leave the CPUs alone for a moment. */
let quietBudgetMs = SMOKE ? 0 : 60_000;
async function waitQuiet() {
  while (quietBudgetMs > 0) {
    // Before a run nothing should be busy, the bench's own idle proxies included (a gateway
    // still collecting garbage after its last run would steal the next cell's CPU).
    const s0 = systemBusyTicks();
    const o0 = selfTicks();
    const t0 = Date.now();
    await new Promise((r) => setTimeout(r, 300));
    const wall = (Date.now() - t0) / 1000;
    const foreign = (100 * Math.max(0, systemBusyTicks() - s0 - (selfTicks() - o0))) / CLK_TCK / wall;
    // (Steal cannot be waited out here: an idle CPU wants nothing, so nothing is stolen from it.)
    if (foreign <= MAX_FOREIGN) return;
    quietBudgetMs -= 1000;
    await new Promise((r) => setTimeout(r, 700));
  }
}

async function measureOnce(cell, seconds, ctx) {
  const { upstream, tokens } = ctx;
  await waitQuiet();
  if (RUN_WARMUP > 0) await runWrk(cell.url, cell.scenario, RUN_WARMUP, tokens);
  const pids = cell.child ? pidsOf(cell.child) : [];
  await settle(upstream); // requests still in flight from the previous cell land before the snapshot
  const m0 = cell.gateway ? await gatewayMetrics(cell.gateway) : null;
  const u0 = await upstream.stats(true);
  // During a run only the proxy under test, the upstream, wrk and this process may work:
  // anything else (other users' processes, the bench's idle proxies) counts as foreign.
  const all = [...pids, upstream.child.pid];
  const c0 = cpuTicks(pids);
  const th0 = cell.node ? threadTicks(cell.child.pid) : null;
  const uc0 = cpuTicks([upstream.child.pid]);
  const s0 = systemBusyTicks();
  const o0 = cpuTicks(all) + selfTicks();
  const st0 = stealTicks();
  const t0 = process.hrtime.bigint();
  const w = await runWrk(cell.url, cell.scenario, seconds, tokens);
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const c1 = cpuTicks(pids);
  const th1 = cell.node ? threadTicks(cell.child.pid) : null;
  const uc1 = cpuTicks([upstream.child.pid]);
  const foreign = (100 * Math.max(0, systemBusyTicks() - s0 - (cpuTicks(all) + selfTicks() - o0))) / CLK_TCK / wall;
  const steal = stealPct(st0, stealTicks(), wall);
  // Let in-flight requests land before counting what the upstream executed.
  const u1 = await settle(upstream);
  const m1 = cell.gateway ? await gatewayMetrics(cell.gateway) : null;
  const cmd = CMDLET[cell.scenario];
  return {
    rps: w.requests / (w.duration_us / 1e6),
    requests: w.requests,
    ok: w.requests - w.status_errors,
    statusErrors: w.status_errors,
    socketErrors: w.connect_errors + w.read_errors + w.write_errors + w.timeouts,
    p50: w.p50_us / 1000,
    p99: w.p99_us / 1000,
    cpu: cell.child ? (100 * (c1 - c0)) / CLK_TCK / wall : null,
    usPerReq: cell.child ? ((c1 - c0) / CLK_TCK / w.requests) * 1e6 : null,
    threads: th1 && Object.fromEntries(Object.keys(th1).map((k) => [k, ((th1[k] - th0[k]) / CLK_TCK / w.requests) * 1e6])),
    upstreamCpu: (100 * (uc1 - uc0)) / CLK_TCK / wall,
    foreign,
    steal,
    executed: (u1.executed[cmd] ?? 0) - (u0.executed[cmd] ?? 0),
    executedOther: Object.entries(u1.executed).reduce((n, [k, v]) => (k === cmd ? n : n + v - (u0.executed[k] ?? 0)), 0),
    upNew: u1.accepted - u0.accepted,
    upUsed: u1.used,
    gcPct: m1 ? (100 * (m1.gcSeconds - m0.gcSeconds)) / wall : null,
    majorGcs: m1 ? m1.majorGcs - m0.majorGcs : null,
    audit: m1 && { writeBuckets: m1.writeBuckets.map((c, i) => c - m0.writeBuckets[i]), events: m1.events - m0.events, batches: m1.batches - m0.batches, maxBatch: m1.maxBatch, forwarded: m1.forward200 - m0.forward200, blocked: m1.block403 - m0.block403, errors: m1.errors - m0.errors },
  };
}

// ---------------------------------------------------------------------------------------------
// checks

async function post(url, body, tok) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(tok ? { authorization: `Bearer ${tok}` } : {}) },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.status, json, text };
}

/** The bench user files an access request and an approver approves it, over the control API. */
async function grantBenchUser(gw, tokens) {
  const created = await post(`${gw.controlUrl}/api/requests`, BENCH_REQUEST, tokens.bench);
  if (created.status !== 201) throw new Error(`${gw.name}: creating the access request failed: ${created.status} ${created.text}`);
  const approved = await post(`${gw.controlUrl}/api/requests/${created.json.id}/approve`, { comment: 'benchmark' }, tokens.approver);
  if (approved.status !== 200 || approved.json.status !== 'approved') throw new Error(`${gw.name}: approval failed: ${approved.status} ${approved.text}`);
  return created.json.id;
}

/** One request per cell, exact: the status each target must answer and what the upstream must run. */
async function preflight(cells, ctx) {
  const lines = [];
  for (const cell of cells) {
    const want = cell.gateway && cell.scenario === 'c' ? 403 : 200;
    const before = await ctx.upstream.stats();
    const r = await post(cell.url + TENANT_PATH, BODIES[cell.scenario], cell.scenario === 'a' ? null : ctx.tokens.bench);
    await new Promise((res) => setTimeout(res, 20));
    const after = await ctx.upstream.stats();
    const cmd = CMDLET[cell.scenario];
    const ran = (after.executed[cmd] ?? 0) - (before.executed[cmd] ?? 0);
    const wantRan = want === 200 ? 1 : 0;
    const ok = r.status === want && ran === wantRan;
    lines.push(`${ok ? 'ok  ' : 'FAIL'} ${cell.scenario}/${cell.target}: HTTP ${r.status} (want ${want}), upstream ran ${cmd} ${ran}× (want ${wantRan})${r.status === 403 ? `, body code ${r.json?.error?.code}` : ''}`);
    if (!ok) throw new Error(`preflight failed:\n${lines.join('\n')}\n${r.text}`);
  }
  return lines;
}

/** Per cell over every measured run: the upstream ran what wrk saw answered (± requests in flight at wrk's stop). */
function loadChecks(cells, results) {
  const out = [];
  let allOk = true;
  for (const cell of cells) {
    const runs = results.get(cell.key);
    const sum = (f) => runs.reduce((n, r) => n + f(r), 0);
    const requests = sum((r) => r.requests);
    const ok = sum((r) => r.ok);
    const executed = sum((r) => r.executed);
    const other = sum((r) => r.executedOther);
    const sockErr = sum((r) => r.socketErrors);
    const inflight = CONNS * runs.length;
    let pass;
    let text;
    if (cell.gateway && cell.scenario === 'c') {
      const blocked = sum((r) => r.audit.blocked);
      const events = sum((r) => r.audit.events);
      pass = executed === 0 && other === 0 && ok === 0 && blocked >= requests && blocked <= requests + inflight && events === blocked;
      text = `wrk ${requests} answered, ${ok} 2xx; gateway blocked ${blocked} (403), audited ${events} task.blocked; upstream executed ${executed} (must be 0)`;
    } else {
      pass = ok === requests && executed >= ok && executed <= ok + inflight && other === 0;
      text = `wrk ${requests} answered, ${ok} 2xx; upstream executed ${executed} ${CMDLET[cell.scenario]} (${executed - ok} more: in flight when wrk stopped, ≤ ${inflight} allowed)`;
      if (cell.gateway && cell.scenario !== 'a') {
        const events = sum((r) => r.audit.events);
        const fwd = sum((r) => r.audit.forwarded);
        pass &&= events === fwd && executed <= events;
        text += `; gateway forwarded ${fwd}, audited ${events} task.executed (every execution audited first: ${executed <= events ? 'yes' : 'NO'})`;
      }
    }
    if (sockErr > 0) text += `; socket errors ${sockErr}`;
    allOk &&= pass;
    out.push(`${pass ? 'ok  ' : 'FAIL'} ${cell.scenario}/${cell.target}: ${text}`);
  }
  return { lines: out, ok: allOk };
}

// ---------------------------------------------------------------------------------------------
// reporting

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const fmt = (n, d = 0) => (n === null || n === undefined || Number.isNaN(n) ? '—' : n.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d }));

function summarise(cells, results) {
  const rows = new Map();
  for (const cell of cells) {
    const runs = results.get(cell.key);
    const a = runs.filter((r) => r.audit);
    rows.set(cell.key, {
      cell,
      rps: median(runs.map((r) => r.rps)),
      min: Math.min(...runs.map((r) => r.rps)),
      max: Math.max(...runs.map((r) => r.rps)),
      p50: median(runs.map((r) => r.p50)),
      p99: median(runs.map((r) => r.p99)),
      cpu: cell.child ? median(runs.map((r) => r.cpu)) : null,
      usPerReq: cell.child ? median(runs.map((r) => r.usPerReq)) : null,
      gcPct: cell.gateway ? median(runs.map((r) => r.gcPct)) : null,
      upCpu: median(runs.map((r) => r.upstreamCpu)),
      foreign: median(runs.map((r) => r.foreign)),
      steal: median(runs.map((r) => r.steal)),
      stealMax: Math.max(...runs.map((r) => r.steal)),
      retries: runs.reduce((n, r) => n + r.retries, 0),
      upUsed: Math.max(...runs.map((r) => r.upUsed)),
      upNew: runs.reduce((n, r) => n + r.upNew, 0),
      perFsync: a.length && a.some((r) => r.audit.batches > 0) ? a.reduce((n, r) => n + r.audit.events, 0) / a.reduce((n, r) => n + r.audit.batches, 0) : null,
      maxBatch: a.length ? Math.max(...a.map((r) => r.audit.maxBatch)) : null,
      write50: a.length ? writeQuantile(a, 0.5) : null,
      write99: a.length ? writeQuantile(a, 0.99) : null,
      runs,
    });
  }
  return rows;
}

/** Per-round ratio of two cells (same round, adjacent in time): min–max across rounds. */
function roundRatios(x, y) {
  const n = Math.min(x.runs.length, y.runs.length);
  const r = [];
  for (let i = 0; i < n; i++) r.push(x.runs[i].rps / y.runs[i].rps);
  return r;
}

function table(rows) {
  const head = ['scen', 'target', 'req/s med', 'min', 'max', 'p50 ms', 'p99 ms', 'proxy CPU%', 'proxy CPU µs/req', 'GC %', 'upstr CPU%', 'up conns used/new', 'ev/fsync', 'sync p50/p99 ms', 'foreign CPU% (reruns)', 'steal % med/max', 'vs http-proxy'];
  const body = [];
  for (const row of rows.values()) {
    const { cell } = row;
    // (d) is compared with http-proxy on (b), (c) with http-proxy on (a) unless it ran on (c) too.
    const refScenario = cell.scenario === 'd' ? 'b' : cell.scenario === 'c' && !rows.has('c/http-proxy') ? 'a' : cell.scenario;
    const ref = rows.get(`${refScenario}/http-proxy`);
    const ratio = ref ? row.rps / ref.rps : null;
    body.push([
      cell.scenario, cell.target, fmt(row.rps), fmt(row.min), fmt(row.max), fmt(row.p50, 2), fmt(row.p99, 2),
      fmt(row.cpu, 0), fmt(row.usPerReq, 0), fmt(row.gcPct, 1), fmt(row.upCpu, 0), `${row.upUsed}/${row.upNew}`, row.perFsync === null ? '—' : `${fmt(row.perFsync, 1)} (max ${row.maxBatch})`, row.write50 === null ? '—' : `${row.write50} / ${row.write99}`, `${fmt(row.foreign, 0)} (${row.retries})`, `${fmt(row.steal, 1)} / ${fmt(row.stealMax, 1)}`,
      ratio === null ? '—' : `${fmt(ratio, 3)}×${refScenario !== cell.scenario ? ` (${refScenario})` : ''}`,
    ]);
  }
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => String(r[i]).length)));
  const line = (r) => '| ' + r.map((c, i) => (i < 2 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join(' | ') + ' |';
  return [line(head), '|' + widths.map((w, i) => (i < 2 ? ':' + '-'.repeat(w + 1) : '-'.repeat(w + 1) + ':')).join('|') + '|', ...body.map(line)].join('\n');
}

function targets(rows) {
  const g = (k) => rows.get(k);
  const out = [];
  const add = (name, x, y, want, cmp = '≥') => {
    if (!x || !y) return out.push(`- ${name}: not measured`);
    const v = x.rps / y.rps;
    const rr = roundRatios(x, y);
    const met = v >= want;
    // Not part of the target: the same comparison in CPU time per request, which time the
    // hypervisor stole does not inflate (a stolen CPU runs nothing, so charges nothing).
    const byCpu = x.usPerReq && y.usPerReq ? `; by CPU per request ${fmt(y.usPerReq / x.usPerReq, 3)}×` : '';
    out.push(`- ${name}: ${fmt(v, 3)}× (target ${cmp} ${want}×; per-round ratios: median ${fmt(median(rr), 3)}, range ${fmt(Math.min(...rr), 3)}–${fmt(Math.max(...rr), 3)}${byCpu}) — ${met ? 'MET' : 'NOT MET'}`);
  };
  add('(a) gateway / http-proxy, ungated', g('a/gateway'), g('a/http-proxy'), 0.95);
  add('(b) gateway / http-proxy, gated + granted', g('b/gateway'), g('b/http-proxy'), 0.9);
  add("(c) gateway denied / http-proxy's (a)", g('c/gateway'), g('a/http-proxy'), 2);
  add(`(d) gateway ${LARGE_POLICIES.toLocaleString('en-US')} policies + ${LARGE_GRANTS.toLocaleString('en-US')} grants / gateway (b)`, g('d/gateway'), g('b/gateway'), 0.97);
  for (const [s, ref] of [['a', 'a'], ['b', 'b'], ['d', 'b']]) {
    const x = g(`${s}/gateway`);
    const y = g(`${ref}/http-proxy`);
    if (!x || !y) continue;
    const added = x.p99 - y.p99;
    out.push(`- p99 added over http-proxy, (${s}): ${fmt(added, 2)} ms (gateway ${fmt(x.p99, 2)} vs ${fmt(y.p99, 2)} ms; target ≤ 1 ms at ${CONNS} connections) — ${added <= 1 ? 'MET' : 'NOT MET'}`);
  }
  // Not a target: the same comparison restricted to the rounds in which the disk stayed quick,
  // to tell the gateway's own latency from the disk's stalls (every gated request waits for one write).
  for (const [s, ref] of [['b', 'b'], ['d', 'b']]) {
    const x = g(`${s}/gateway`);
    const y = g(`${ref}/http-proxy`);
    if (!x || !y) continue;
    const quick = [];
    for (let i = 0; i < Math.min(x.runs.length, y.runs.length); i++) if (slowWrites(x.runs[i], QUICK_WRITE_BUCKET) === 0) quick.push(i);
    if (quick.length === 0) {
      out.push(`  - (${s}) in rounds where no audit write took over ${Number(WRITE_BUCKETS[QUICK_WRITE_BUCKET]) * 1000} ms: none (every round had a slower write)`);
      continue;
    }
    const gx = median(quick.map((i) => x.runs[i].p99));
    const gy = median(quick.map((i) => y.runs[i].p99));
    out.push(`  - (${s}) in the ${quick.length} of ${x.runs.length} rounds where no audit write took over ${Number(WRITE_BUCKETS[QUICK_WRITE_BUCKET]) * 1000} ms: p99 added ${fmt(gx - gy, 2)} ms (${fmt(gx, 2)} vs ${fmt(gy, 2)} ms over the same rounds; not a target, shows what the disk's stalls add)`);
  }
  return out;
}

/**
 * Where each node proxy's CPU per request goes (medians over rounds): its main thread (JS and the
 * socket writes it makes itself) against its other threads (GC helpers; libuv's pool, where the
 * audit's durable writes run), user and system time each. What (b) pays over (a) shows here.
 */
function threadLines(rows) {
  const out = [];
  for (const row of rows.values()) {
    const t = row.runs.filter((r) => r.threads);
    if (t.length === 0) continue;
    const m = (k) => fmt(median(t.map((r) => r.threads[k])), 0);
    out.push(`- (${row.cell.scenario}) ${row.cell.target}: main thread ${m('mainUser')} user + ${m('mainSys')} system, other threads ${m('otherUser')} user + ${m('otherSys')} system`);
  }
  return out;
}

/**
 * gateway-B against gateway, paired by round (both ran in the same round): a change's effect on
 * a shared host is smaller than how far the medians of two instances of one build land apart, so
 * the per-round ratios and how many rounds favour B are what an A/B decision reads. An A/A
 * (`--ab-node-args=` alone: the same build and flags) shows what "no effect" looks like.
 */
function abLines(rows) {
  const out = [];
  for (const s of ['a', 'b', 'c', 'd']) {
    const x = rows.get(`${s}/gateway-B`);
    const y = rows.get(`${s}/gateway`);
    if (!x || !y) continue;
    const n = Math.min(x.runs.length, y.runs.length);
    const paired = (f) => Array.from({ length: n }, (_, i) => f(x.runs[i]) / f(y.runs[i]));
    const rps = paired((r) => r.rps);
    const cpu = paired((r) => r.usPerReq);
    const range = (v) => `median ${fmt(median(v), 3)}, range ${fmt(Math.min(...v), 3)}–${fmt(Math.max(...v), 3)}`;
    const majors = (row) => row.runs.reduce((t, r) => t + (r.majorGcs ?? 0), 0);
    out.push(
      `- (${s}) B/A per round: req/s ${range(rps)}, B ahead in ${rps.filter((v) => v > 1).length} of ${n}; CPU µs/req ${range(cpu)}, B cheaper in ${cpu.filter((v) => v < 1).length} of ${n}; ` +
        `p99 ${fmt(y.p99, 2)} → ${fmt(x.p99, 2)} ms; GC % ${fmt(y.gcPct, 1)} → ${fmt(x.gcPct, 1)}; full GCs during the runs ${majors(y)} → ${majors(x)}`,
    );
  }
  return out;
}

function machine() {
  const model = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpus()[0]?.model ?? 'unknown';
  const ver = (cmd, args) => {
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    return ((r.stdout || '') + (r.stderr || '')).split('\n')[0].trim();
  };
  return {
    date: new Date().toISOString(),
    nproc: cpus().length,
    cpu: model,
    node: process.version,
    wrk: ver('wrk', ['-v']).replace(/ Copyright.*/, ''),
    nginx: has('nginx') ? ver('nginx', ['-v']) : 'absent',
    kernel: ver('uname', ['-r']),
  };
}

// ---------------------------------------------------------------------------------------------
// modes

async function micro() {
  const args = ['--expose-gc', join(HERE, 'micro.mjs'), ...(SMOKE ? ['--quick'] : [])];
  const child = start('micro', pinned(1, [process.execPath, ...args]));
  child.stdout.pipe(process.stdout);
  child.stderr.pipe(process.stderr);
  const [code] = await once(child, 'exit');
  if (code !== 0) throw new Error(`micro.mjs exited with ${code}`);
}

async function profile(out, tokens) {
  const profDir = join(out, 'prof');
  await mkdir(profDir, { recursive: true });
  const upstream = await startUpstream(out);
  const scenario = opt.scenario ?? 'b';
  // (d) is (b) against the large state: profile that gateway, not the small one.
  const large = scenario === 'd';
  const gw = await startGateway('gw-prof', out, upstream.url, large ? LARGE_POLICIES : 10, large ? LARGE_GRANTS : 0, { cpuProf: profDir });
  await grantBenchUser(gw, tokens);
  const ctx = { upstream, tokens };
  const cell = { key: `${scenario}/gateway`, scenario, target: 'gateway', url: gw.proxyUrl, child: gw.child, gateway: gw };
  await preflight([cell], ctx);
  const secs = Number(opt.duration ?? 10);
  const loadStartUs = Number(process.hrtime.bigint() / 1000n);
  const r = await measure(cell, secs, ctx);
  const loadEndUs = Number(process.hrtime.bigint() / 1000n);
  console.log(`profiled scenario ${scenario} for ${secs}s: ${fmt(r.rps)} req/s, p99 ${fmt(r.p99, 2)} ms, CPU ${fmt(r.cpu)}%, ${fmt(r.usPerReq)} µs CPU/req, foreign ${fmt(r.foreign)}% (profiler on)`);
  await stop(gw.child, 30_000);
  if (!opt.keep) await rm(gw.dataDir, { recursive: true, force: true });
  const files = (await readdir(profDir)).filter((f) => f.endsWith('.cpuprofile'));
  if (files.length === 0) throw new Error('no .cpuprofile written');
  const file = join(profDir, files.sort().at(-1));
  console.log(`profile: ${file}\n`);
  const prof = windowed(JSON.parse(readFileSync(file, 'utf8')), loadStartUs, loadEndUs);
  console.log(`samples taken during the measured load only (${fmt(secs)} s; start-up and shutdown left out)`);
  console.log(summariseProfile(prof, { top: 30 }));
  console.log('\ninclusive time of the data path\'s steps (share of busy time):');
  console.log(inclusive(prof, ['parserOnIncoming', 'readBody', 'handle', 'classifyExchange', 'verify', 'decide', 'auditDecision', 'append', 'forward', 'respond', 'sendError', 'sendErrorBody', '#commit', '#writeHead', 'onDecision']));
}

async function main() {
  if (opt.micro) return micro();
  if (!has('wrk')) throw new Error('wrk is not installed (Debian: apt-get install wrk)');
  if (!existsSync(CLI)) throw new Error('dist/ is missing: run `npm run build`');
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const out = join(HERE, 'out', `${opt.profile ? 'profile' : SMOKE ? 'smoke' : 'run'}-${stamp}`);
  await mkdir(out, { recursive: true });
  const tokens = { bench: await token(BENCH_USER), approver: await token(APPROVER) };
  if (opt.profile) return profile(out, tokens);

  const info = machine();
  console.log(`pamgate bench — ${info.date}\nmachine: ${info.nproc} CPUs, ${info.cpu}; kernel ${info.kernel}; node ${info.node}; ${info.wrk}; ${info.nginx}`);
  if (!TASKSET) console.log('NOTICE: taskset missing or fewer than 2 CPUs: processes are NOT pinned; numbers are not comparable to pinned runs');
  console.log(`plan: ${ROUNDS} interleaved round(s) × ${DURATION}s per cell, ${WARMUP}s warm-up per cell, wrk -t1 -c${CONNS}; wrk + upstream on CPU 0, proxy on CPU 1`);

  const upstream = await startUpstream(out);
  const nginx = await startNginx(out, upstream.url);
  if (!nginx) console.log('NOTICE: nginx not found (Debian: apt-get install nginx-light): the nginx target is skipped');
  // A/B: a second build (--ab) and/or the same build with other node flags (--ab-node-args).
  const abOpts = { cli: opt.ab ? resolve(opt.ab) : CLI, flags: opt['ab-node-args'] !== undefined ? words(opt['ab-node-args']) : GATEWAY_NODE_FLAGS };
  const withAlt = opt.ab !== undefined || opt['ab-node-args'] !== undefined;
  const withAltLarge = withAlt && (!opt.only || opt.only.split(',').some((k) => k === 'd' || k.startsWith('d/') || k === 'gateway-B'));
  /** The node proxies of one round (the run's, or with --fresh-instances the round's own), the bench user granted on each gateway. */
  const startNodeProxies = async (round) => {
    const tag = FRESH ? `-r${round + 1}` : '';
    const [small, large, baseline] = await Promise.all([
      startGateway(`gw-small${tag}`, out, upstream.url, 10, 0),
      startGateway(`gw-large${tag}`, out, upstream.url, LARGE_POLICIES, LARGE_GRANTS),
      startBaseline(out, upstream.url),
    ]);
    const alt = withAlt ? await startGateway(`gw-b${tag}`, out, upstream.url, 10, 0, abOpts) : null;
    const altLarge = withAltLarge ? await startGateway(`gw-b-large${tag}`, out, upstream.url, LARGE_POLICIES, LARGE_GRANTS, abOpts) : null;
    const gateways = [small, large, alt, altLarge].filter((g) => g !== null);
    for (const gw of gateways) await grantBenchUser(gw, tokens);
    return { small, large, baseline, alt, altLarge, nginx, direct: { url: upstream.url, child: null }, gateways };
  };
  const stopNodeProxies = async (procs) => {
    await Promise.all([procs.baseline, ...procs.gateways].map((p) => stop(p.child)));
    if (!opt.keep) await Promise.all(procs.gateways.map((g) => rm(g.dataDir, { recursive: true, force: true })));
  };
  let procs = await startNodeProxies(0);
  const { small, large } = procs;
  console.log(`gateways: small ${small.policies} policies (started in ${small.startMs} ms); large ${large.policies} policies + ${large.seeded} seeded grants of other users (started in ${large.startMs} ms)${FRESH ? '; started afresh for every round' : ''}`);

  const ctx = { upstream, tokens };
  // Cells come in groups whose ratios are judged against each other; each group runs back to
  // back so a pair being compared is measured seconds apart (the host's noise drifts slowly).
  const groups = [];
  // `proc` names the process serving the cell in `procs`; bind() points the cell at this round's.
  const cell = (scenario, target, proc) => ({ key: `${scenario}/${target}`, scenario, target, proc, url: null, child: null, gateway: null, node: target === 'gateway' || target === 'gateway-B' || target === 'http-proxy' });
  const bind = (cs) => {
    for (const c of cs) {
      const p = procs[c.proc];
      c.url = p.proxyUrl ?? p.url;
      c.child = p.child;
      c.gateway = p.proxyUrl ? p : null;
    }
  };
  groups.push([
    cell('a', 'http-proxy', 'baseline'),
    cell('a', 'gateway', 'small'),
    cell('c', 'gateway', 'small'),
    ...(withAlt ? [cell('a', 'gateway-B', 'alt'), cell('c', 'gateway-B', 'alt')] : []),
    ...(nginx ? [cell('a', 'nginx', 'nginx')] : []),
    cell('a', 'direct', 'direct'),
  ]);
  groups.push([
    cell('b', 'http-proxy', 'baseline'),
    cell('b', 'gateway', 'small'),
    cell('d', 'gateway', 'large'),
    ...(withAlt ? [cell('b', 'gateway-B', 'alt')] : []),
    ...(withAltLarge ? [cell('d', 'gateway-B', 'altLarge')] : []),
    ...(nginx ? [cell('b', 'nginx', 'nginx')] : []),
    cell('b', 'direct', 'direct'),
  ]);
  if (opt['with-c-baseline']) groups.push([cell('c', 'http-proxy', 'baseline')]);
  if (opt.only) {
    const keep = new Set(opt.only.split(','));
    for (const g of groups) g.splice(0, g.length, ...g.filter((c) => keep.has(c.key) || keep.has(c.scenario) || keep.has(c.target)));
  }
  const cells = groups.flat();

  bind(cells);
  console.log('\npreflight (one request per cell, exact counts):');
  for (const l of await preflight(cells, ctx)) console.log('  ' + l);

  const warmUp = async (label) => {
    if (WARMUP <= 0) return;
    process.stdout.write(`${label}warm-up (${WARMUP}s per cell)…`);
    for (const cell of cells) await measure(cell, WARMUP, ctx);
    process.stdout.write(' done\n');
  };
  await warmUp('\n');
  const results = new Map(cells.map((c) => [c.key, []]));
  retryBudget = SMOKE ? 0 : Math.ceil((cells.length * ROUNDS) / 6);
  for (let round = 0; round < ROUNDS; round++) {
    if (FRESH && round > 0) {
      // A new process per round: one process's luck (its memory layout, what its JIT chose)
      // becomes one round's noise instead of the whole run's bias. But a young gateway spends
      // more CPU on its helper threads (V8's compiler and GC helpers: ~24 against ~18 µs per
      // request after an 8-s warm-up) than a long-lived one, which is why this is not the default.
      await stopNodeProxies(procs);
      procs = await startNodeProxies(round);
      bind(cells);
      await preflight(cells, ctx);
      await warmUp(`round ${round + 1}/${ROUNDS}: new processes; `);
    }
    // Groups take turns going first; inside a group the order flips every round (A B C, C B A, …)
    // so no cell always runs first, last, or right after the same neighbour.
    const order = [];
    for (let g = 0; g < groups.length; g++) {
      const group = groups[(g + round) % groups.length];
      order.push(...(round % 2 === 0 ? group : [...group].reverse()));
    }
    process.stdout.write(`round ${round + 1}/${ROUNDS}:`);
    for (const c of order) {
      const r = await measure(c, DURATION, ctx);
      results.get(c.key).push(r);
      process.stdout.write(` ${c.key} ${fmt(r.rps)}`);
    }
    process.stdout.write('\n');
  }

  const rows = summarise(cells, results);
  const checks = loadChecks(cells, results);
  const memory = await memoryLines(procs.gateways);
  const report = [
    `## Results — ${info.date}`,
    '',
    `Command: \`npm run bench${process.argv.slice(2).length ? ' -- ' + process.argv.slice(2).join(' ') : ''}\``,
    `Machine: ${info.nproc} CPUs, ${info.cpu}; kernel ${info.kernel}; node ${info.node}; ${info.wrk}; ${info.nginx}`,
    `Method: ${ROUNDS} interleaved round(s) × ${DURATION}s per cell after ${WARMUP}s warm-up${FRESH ? ' (the node proxies — gateways, http-proxy — started afresh and warmed up for every round)' : ' (the same processes for every round)'}; wrk -t1 -c${CONNS} on CPU 0 with the upstream; proxy on CPU 1${TASKSET ? '' : ' (NOT pinned)'}.`,
    `Shared machine: a run during which processes other than the proxy under test, the upstream and wrk (other users' jobs, the bench's idle proxies) used more than ${MAX_FOREIGN}% of a CPU, or during which the hypervisor took more than ${MAX_STEAL}% of CPU 0 or 1 for other guests (steal, /proc/stat), was run again (at most ${RETRIES}× per run, a sixth of the plan in all; waiting for a quiet machine at most 60 s per run of the bench); "foreign CPU%" and "steal %" are over kept runs.`,
    `(d): ${large.policies} policies, ${large.seeded} active grants of other users + the bench user's grant.`,
    ...(opt['data-root'] ? [`**DIAGNOSTIC RUN — data dirs and audit files on ${resolve(opt['data-root'])} (${fsType(opt['data-root'])}). On tmpfs a synchronous write does not reach stable storage: NOT durable, these numbers show the gateway without its disk and are not results.**`] : []),
    '',
    table(rows),
    '',
    SMOKE ? 'Targets (SMOKE RUN: 1-s runs, no warm-up, one round — these ratios prove the harness, they are not results):' : 'Targets (medians, one run):',
    ...targets(rows),
    ...(withAlt ? ['A/B (gateway-B vs gateway, paired by round):', ...abLines(rows)] : []),
    '',
    'CPU µs per request by thread (node proxies; medians over rounds):',
    ...threadLines(rows),
    '',
    'Upstream checks (all measured runs):',
    ...checks.lines.map((l) => '- ' + l),
    '',
    "Memory of the gateways after the rounds (their /metrics: resident set, V8 heap used / reserved; the node flags decide how far the heap grows before a full GC):",
    ...memory,
    '',
    `The disk alone, after the rounds (bench/disk.mjs: O_DSYNC writes of ${16 * 400} bytes, a typical batch, on the audit files' filesystem, pinned to CPU 1, ${SMOKE ? 1 : 4} s each; "in place" rewrites a zero-filled file as audit.wal does, "append" grows the file, as a synchronous append to the audit file would):`,
    ...(await diskProbe(procs.small.dataDir)),
  ].join('\n');
  console.log('\n' + report);
  await writeFile(join(out, 'results.md'), report + '\n');
  await writeFile(join(out, 'results.json'), JSON.stringify({ info, opts: { ROUNDS, DURATION, WARMUP, CONNS }, cells: [...rows.values()].map(({ cell, ...r }) => ({ key: cell.key, ...r })) }, null, 2));
  console.log(`\n(saved to ${out}/results.md)`);
  if (!checks.ok) process.exitCode = 1;

  await stopAll();
  cleaning = null;
  if (!opt.keep) {
    await Promise.all(procs.gateways.map((g) => rm(g.dataDir, { recursive: true, force: true })));
    if (opt['data-root']) await rm(dirname(procs.small.dataDir), { recursive: true, force: true });
  }
  if (!opt['no-micro']) {
    console.log('\nmicrobenchmarks (bench/micro.mjs):');
    await micro();
  }
}

try {
  await main();
} catch (err) {
  process.stderr.write(`bench: ${err.stack ?? err}\n`);
  process.exitCode = 1;
} finally {
  await stopAll();
}
