// Summarises a V8 .cpuprofile (node --cpu-prof): self time by function and by area.
// usage: node bench/profile.mjs FILE.cpuprofile [top]
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

function area(url, name) {
  if (!url) {
    if (name === '(garbage collector)') return 'GC';
    if (name === '(idle)' || name === '(program)') return name;
    return 'native/builtin';
  }
  let m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return `dep ${m[1]}`;
  m = /\/dist\/(.*?)\.js$/.exec(url);
  if (m) return `pamgate ${m[1]}`;
  if (url.startsWith('node:')) {
    const mod = url.slice(5).split('/').slice(0, 2).join('/').replace(/^internal\//, 'internal/');
    return `node ${mod}`;
  }
  return url;
}

/**
 * The part of a profile sampled between two CLOCK_MONOTONIC times in µs (`process.hrtime`'s clock,
 * which V8 stamps profiles with): the load alone, without start-up (for (d), loading 10,000
 * policies and 100,000 grants would otherwise look like request work).
 */
export function windowed(profile, startUs, endUs) {
  const samples = [];
  const timeDeltas = [];
  let t = profile.startTime;
  let last = null;
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i] ?? 0;
    if (t < startUs || t > endUs) continue;
    samples.push(profile.samples[i]);
    timeDeltas.push(last === null ? 0 : t - last);
    last = t;
  }
  return { ...profile, startTime: Math.max(profile.startTime, startUs), endTime: Math.min(profile.endTime, endUs), samples, timeDeltas };
}

export function summariseProfile(profile, { top = 30 } = {}) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map();
  const { samples, timeDeltas } = profile;
  for (let i = 0; i < samples.length; i++) self.set(samples[i], (self.get(samples[i]) ?? 0) + (timeDeltas[i] ?? 0));
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const idle = [...self].filter(([id]) => byId.get(id)?.callFrame.functionName === '(idle)').reduce((n, [, t]) => n + t, 0);
  const busy = total - idle;
  const fns = new Map();
  const areas = new Map();
  for (const [id, t] of self) {
    const { callFrame: f } = byId.get(id);
    if (f.functionName === '(idle)') continue;
    const where = f.url ? `${f.url.replace(/^file:\/\/.*?\/(node_modules|dist)\//, '$1/')}:${f.lineNumber + 1}` : '';
    const key = `${f.functionName || '(anonymous)'} ${where}`;
    fns.set(key, (fns.get(key) ?? 0) + t);
    const a = area(f.url, f.functionName);
    areas.set(a, (areas.get(a) ?? 0) + t);
  }
  const pct = (t) => ((100 * t) / busy).toFixed(1).padStart(5) + '%';
  const lines = [`busy ${(busy / 1e6).toFixed(2)} s of ${(total / 1e6).toFixed(2)} s sampled (idle ${(100 * idle / total).toFixed(1)}%); shares below are of busy time`, '', 'self time by area:'];
  for (const [a, t] of [...areas].sort((x, y) => y[1] - x[1]).slice(0, 25)) lines.push(`  ${pct(t)}  ${a}`);
  lines.push('', `self time by function (top ${top}):`);
  for (const [k, t] of [...fns].sort((x, y) => y[1] - x[1]).slice(0, top)) lines.push(`  ${pct(t)}  ${k}`);
  return lines.join('\n');
}

if (import.meta.url === `file://${process.argv[1]}` || fileURLToPath(import.meta.url) === process.argv[1]) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: node bench/profile.mjs FILE.cpuprofile [top]\n');
    process.exit(2);
  }
  console.log(summariseProfile(JSON.parse(readFileSync(file, 'utf8')), { top: Number(process.argv[3] ?? 40) }));
}

/** Self time of functions named `name`, split by their callers' call paths (depth frames up). */
export function callersOf(profile, name, depth = 3) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map();
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const paths = new Map();
  let total = 0;
  for (const [id, t] of self) {
    if (byId.get(id).callFrame.functionName !== name) continue;
    total += t;
    const chain = [];
    for (let p = parent.get(id), k = 0; p !== undefined && k < depth; p = parent.get(p), k++) {
      const f = byId.get(p).callFrame;
      chain.push(`${f.functionName || '(anon)'}@${(f.url.split('/').pop() || '')}:${f.lineNumber + 1}`);
    }
    const key = chain.join(' < ');
    paths.set(key, (paths.get(key) ?? 0) + t);
  }
  return [...paths].sort((a, b) => b[1] - a[1]).slice(0, 12).map(([k, t]) => `  ${((100 * t) / total).toFixed(1).padStart(5)}%  ${k}`).join('\n');
}

/** Inclusive time (share of busy time) of each named function: samples with it anywhere on the stack. */
export function inclusive(profile, names) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map();
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  let busy = 0;
  const out = new Map(names.map((n) => [n, 0]));
  for (const [id, t] of self) {
    if (byId.get(id).callFrame.functionName === '(idle)') continue;
    busy += t;
    const seen = new Set();
    for (let p = id; p !== undefined; p = parent.get(p)) {
      const name = byId.get(p).callFrame.functionName;
      if (out.has(name) && !seen.has(name)) {
        seen.add(name);
        out.set(name, out.get(name) + t);
      }
    }
  }
  return [...out].map(([n, t]) => `  ${((100 * t) / busy).toFixed(1).padStart(5)}%  ${n}`).join('\n');
}
