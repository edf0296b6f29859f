import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AuditLog } from '../../src/audit/log.js';
import { verifyAuditFile } from '../../src/audit/verify.js';
import { diskModel, type DiskOp } from './helpers/disk-model.js';

// Random faults against the audit writer, then a power cut, a kill, or a clean close, over the
// page-cache model of helpers/disk-model.ts. Whatever happened, the next open() must give a chain
// that verifies, holds every acknowledged event and no refused one. And once the disk is good
// again, the writer must take events again without a restart.
//
// Timing (checkpoints run on a 100 ms clock) makes a seed's run vary a little; a failure prints
// the seed and the steps taken. FUZZ_SEEDS=n runs n seeds (default 24), FUZZ_SEED=s one seed.

const SEEDS = process.env['FUZZ_SEED'] !== undefined ? [Number(process.env['FUZZ_SEED'])] : Array.from({ length: Number(process.env['FUZZ_SEEDS'] ?? 24) }, (_, i) => i + 1);
const PARALLEL = 4;

/** mulberry32: small, seedable. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const FAULTS: Array<{ op: DiskOp; file: string }> = [
  { op: 'write', file: 'audit.wal' },
  { op: 'write', file: 'audit.jsonl' },
  { op: 'fdatasync', file: 'audit.jsonl' },
  { op: 'ftruncate', file: 'audit.jsonl' },
  { op: 'open', file: 'audit.jsonl' },
  { op: 'rename', file: 'audit.jsonl' },
  { op: 'syncDir', file: '' },
  { op: 'write', file: 'audit.head' },
];

const OWN_EVENTS = new Set(['audit.repaired']);

async function chainTypes(dir: string): Promise<string[]> {
  const names = (await readdir(dir)).filter((n) => n.endsWith('.jsonl'));
  names.sort((a, b) => Number(a === 'audit.jsonl') - Number(b === 'audit.jsonl') || a.localeCompare(b));
  const out: string[] = [];
  for (const name of names) {
    for (const line of (await readFile(join(dir, name), 'utf8')).split('\n').filter(Boolean)) out.push((JSON.parse(line) as { type: string }).type);
  }
  return out;
}

async function runSeed(seed: number): Promise<string[]> {
  const random = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
  const dir = await mkdtemp(join(tmpdir(), `pamgate-fuzz-${seed}-`));
  const steps: string[] = [];
  const problems: string[] = [];
  try {
    const walBytes = pick([4096, 8192, 16384, 65536]);
    const maxBytes = pick([4000, 20_000, 1_000_000]);
    const { fs, ctl, powerLoss, crash } = diskModel();
    // Armed faults: each fails its operation `left` more times, on its `after`-th match.
    const armed: Array<{ op: DiskOp; file: string; after: number; left: number }> = [];
    ctl.fault = (op, file) => {
      for (const f of armed) {
        if (f.left === 0 || f.op !== op || !file.endsWith(f.file)) continue;
        if (f.after > 0) {
          f.after--;
          continue;
        }
        f.left--;
        return Object.assign(new Error(`EIO: injected ${op} ${file}`), { code: 'EIO' });
      }
      return null;
    };
    if (process.env['FUZZ_TRACE'] !== undefined) ctl.trace = (line) => steps.push(`    ${line}`);
    steps.push(`walBytes=${walBytes} maxBytes=${maxBytes}`);
    const log = await AuditLog.open({ dir, fs, walBytes, maxBytes });
    const acked = new Set<string>();
    const refused = new Set<string>();
    const all = new Set<string>();
    let n = 0;
    const add = (pad: number): Promise<void> => {
      const type = `e${++n}`;
      all.add(type);
      return log.append({ type, pad: 'p'.repeat(pad) }).then(
        () => void (acked.add(type), ctl.trace?.(`acked ${type}`)),
        (err: Error) => void (refused.add(type), ctl.trace?.(`refused ${type}: ${err.message}`)),
      );
    };

    const stepCount = 10 + Math.floor(random() * 25);
    for (let s = 0; s < stepCount; s++) {
      const r = random();
      if (r < 0.5) {
        const k = 1 + Math.floor(random() * 12);
        const pad = random() < 0.1 ? walBytes : Math.floor(random() * 600);
        steps.push(`append ${k}×${pad}`);
        const batch = Array.from({ length: k }, () => add(pad));
        if (random() < 0.7) await Promise.all(batch);
      } else if (r < 0.75) {
        const ms = Math.floor(random() * 130);
        steps.push(`sleep ${ms}`);
        await new Promise((res) => setTimeout(res, ms));
      } else {
        const f = { ...pick(FAULTS), after: Math.floor(random() * 3), left: 1 + Math.floor(random() * 2) };
        steps.push(`fault ${f.op} ${f.file || 'dir'} after ${f.after} ×${f.left}`);
        armed.push(f);
      }
    }

    // The disk is good again: the writer must recover on its own (a probe or two, then batches).
    armed.length = 0;
    const liveness = random() < 0.7;
    if (liveness) {
      steps.push('faults off; liveness');
      let ok = false;
      for (let i = 0; i < 4 && !ok; i++) {
        const type = `live${i}`;
        all.add(type);
        ok = await log.append({ type }).then(() => (acked.add(type), true), () => (refused.add(type), false));
      }
      if (!ok) problems.push('still refusing events with the faults gone');
    }

    const end = pick(['power', 'kill', 'close'] as const);
    steps.push(`end: ${end}`);
    if (end === 'close') await log.close();
    else {
      await crash();
      if (end === 'power') powerLoss(dir);
    }

    const reopened = await AuditLog.open({ dir });
    await reopened.close();
    const verdict = await verifyAuditFile(dir);
    if (!verdict.ok) problems.push(`verify: ${JSON.stringify(verdict)}`);
    const types = await chainTypes(dir);
    const present = new Set(types);
    for (const t of acked) if (!present.has(t)) problems.push(`acknowledged ${t} lost`);
    for (const t of refused) if (present.has(t)) problems.push(`refused ${t} recorded`);
    for (const t of types) if (!all.has(t) && !OWN_EVENTS.has(t)) problems.push(`unexpected ${t} in the chain`);
    if (present.size !== types.length) problems.push('an event recorded twice');
  } catch (err) {
    problems.push(`threw: ${(err as Error).stack ?? String(err)}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return problems.length === 0 ? [] : [`seed ${seed}: ${problems.join('; ')}`, ...steps.map((s) => `  ${s}`)];
}

describe('audit writer under random faults', () => {
  it(`keeps every acknowledged event and no refused one (${SEEDS.length} seeds)`, { timeout: 120_000 }, async () => {
    const report: string[] = [];
    for (let i = 0; i < SEEDS.length; i += PARALLEL) {
      const results = await Promise.all(SEEDS.slice(i, i + PARALLEL).map(runSeed));
      for (const r of results) report.push(...r);
    }
    expect(report.join('\n')).toBe('');
  });
});
