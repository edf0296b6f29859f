import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AuditLog } from '../../src/audit/log.js';
import { verifyAuditFile } from '../../src/audit/verify.js';
import { chainTypes } from './helpers/chain.js';
import { diskModel, type DiskOp } from './helpers/disk-model.js';

// Random faults against the audit writer, then a power cut, a kill, or a clean close, over the
// page-cache model of helpers/disk-model.ts; sometimes a second life that opens on a failing disk.
// Whatever happened, the next open() must give a chain that verifies, holds every acknowledged
// event and no refused one. And once the disk is good again, the writer must take events again
// without a restart. Faults fail an operation before it does anything (or make a write short):
// a write that lands and then reports an error can bring a refused batch back, unavoidably.
//
// Timing (checkpoints run on a 100 ms clock) makes a seed's run vary a little; a failure prints
// the seed and the steps taken (FUZZ_TRACE=1: every file operation too). FUZZ_SEEDS=n runs n
// seeds (default 24) from FUZZ_FROM (default 1), FUZZ_SEED=s one seed.

const FIRST_SEED = Number(process.env['FUZZ_FROM'] ?? 1);
const SEEDS = process.env['FUZZ_SEED'] !== undefined ? [Number(process.env['FUZZ_SEED'])] : Array.from({ length: Number(process.env['FUZZ_SEEDS'] ?? 24) }, (_, i) => FIRST_SEED + i);
const PARALLEL = 4;
const SEED_DEADLINE_MS = 30_000;

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
  // Never short: a 128-byte overwrite inside one page is not split by the kernel.
  { op: 'write', file: 'audit.head' },
];

const OWN_EVENTS = new Set(['audit.repaired']);


interface Run {
  random: () => number;
  dir: string;
  steps: string[];
  problems: string[];
  acked: Set<string>;
  refused: Set<string>;
  all: Set<string>;
  n: number;
}

type Armed = Array<{ op: DiskOp; file: string; after: number; left: number; short: boolean }>;

function pick<T>(run: Run, xs: readonly T[]): T {
  return xs[Math.floor(run.random() * xs.length)]!;
}

function randomFault(run: Run): Armed[number] {
  const f = pick(run, FAULTS);
  return { ...f, after: Math.floor(run.random() * 3), left: 1 + Math.floor(run.random() * 2), short: f.op === 'write' && f.file !== 'audit.head' && run.random() < 0.2 };
}

/**
 * One life of the writer: open (with `openFaults` armed), random steps, then an end. Faults the
 * steps arm are cleared before the liveness check and the end.
 */
async function life(run: Run, opts: { walBytes: number; maxBytes: number; openFaults: number; steps: number }): Promise<void> {
  const { fs, ctl, powerLoss, crash } = diskModel();
  const armed: Armed = [];
  ctl.fault = (op, file) => {
    for (const f of armed) {
      if (f.left === 0 || f.op !== op || !file.endsWith(f.file)) continue;
      if (f.after > 0) {
        f.after--;
        continue;
      }
      f.left--;
      return f.short ? 'short' : Object.assign(new Error(`EIO: injected ${op} ${file}`), { code: 'EIO' });
    }
    return null;
  };
  if (process.env['FUZZ_TRACE'] !== undefined) ctl.trace = (line) => run.steps.push(`    ${line}`);
  const end = async (): Promise<void> => {
    const how = pick(run, ['power', 'kill', 'close'] as const);
    run.steps.push(`end: ${how}`);
    if (how === 'close') {
      await log?.close().catch((err: Error) => run.steps.push(`close failed: ${err.message}`));
      await crash(); // closes what a failed close left open
    } else {
      await crash();
      if (how === 'power') powerLoss(run.dir);
    }
  };

  for (let i = 0; i < opts.openFaults; i++) armed.push(randomFault(run));
  run.steps.push(`open walBytes=${opts.walBytes} maxBytes=${opts.maxBytes}${armed.map((f) => ` [${f.op} ${f.file || 'dir'}${f.short ? ' short' : ''} after ${f.after} ×${f.left}]`).join('')}`);
  let log: AuditLog | null = null;
  try {
    log = await AuditLog.open({ dir: run.dir, fs, walBytes: opts.walBytes, maxBytes: opts.maxBytes });
  } catch (err) {
    run.steps.push(`open refused: ${(err as Error).message}`);
    await end();
    return;
  }
  const writer = log;
  const add = (pad: number): Promise<void> => {
    const type = `e${++run.n}`;
    run.all.add(type);
    return writer.append({ type, pad: 'p'.repeat(pad) }).then(
      () => void (run.acked.add(type), ctl.trace?.(`acked ${type}`)),
      (err: Error) => void (run.refused.add(type), ctl.trace?.(`refused ${type}: ${err.message}`)),
    );
  };

  for (let s = 0; s < opts.steps; s++) {
    const r = run.random();
    if (r < 0.5) {
      const k = 1 + Math.floor(run.random() * 12);
      const pad = run.random() < 0.1 ? opts.walBytes : Math.floor(run.random() * 600);
      run.steps.push(`append ${k}×${pad}`);
      const batch = Array.from({ length: k }, () => add(pad));
      if (run.random() < 0.7) await Promise.all(batch);
    } else if (r < 0.75) {
      const ms = Math.floor(run.random() * 130);
      run.steps.push(`sleep ${ms}`);
      await new Promise((res) => setTimeout(res, ms));
    } else {
      const f = randomFault(run);
      run.steps.push(`fault ${f.op} ${f.file || 'dir'}${f.short ? ' short' : ''} after ${f.after} ×${f.left}`);
      armed.push(f);
    }
  }

  // The disk is good again: the writer must recover on its own (a probe or two, then batches).
  armed.length = 0;
  if (run.random() < 0.7) {
    run.steps.push('faults off; liveness');
    let ok = false;
    for (let i = 0; i < 4 && !ok; i++) {
      const type = `live${++run.n}`;
      run.all.add(type);
      ok = await writer.append({ type }).then(() => (run.acked.add(type), true), () => (run.refused.add(type), false));
    }
    if (!ok) run.problems.push('still refusing events with the faults gone');
  }
  await end();
}

async function runSeed(seed: number): Promise<string[]> {
  const random = rng(seed);
  const dir = await mkdtemp(join(tmpdir(), `pamgate-fuzz-${seed}-`));
  const run: Run = { random, dir, steps: [], problems: [], acked: new Set(), refused: new Set(), all: new Set(), n: 0 };
  try {
    const walBytes = pick(run, [4096, 8192, 16384, 65536]);
    const maxBytes = pick(run, [4000, 20_000, 1_000_000]);
    await life(run, { walBytes, maxBytes, openFaults: 0, steps: 10 + Math.floor(random() * 25) });
    // Sometimes a second life that starts on a failing disk (open() itself under faults).
    if (random() < 0.4) await life(run, { walBytes, maxBytes, openFaults: 1 + Math.floor(random() * 3), steps: Math.floor(random() * 10) });

    const reopened = await AuditLog.open({ dir });
    await reopened.close();
    const verdict = await verifyAuditFile(dir);
    if (!verdict.ok) run.problems.push(`verify: ${JSON.stringify(verdict)}`);
    const types = await chainTypes(dir);
    const present = new Set(types);
    for (const t of run.acked) if (!present.has(t)) run.problems.push(`acknowledged ${t} lost`);
    for (const t of run.refused) if (present.has(t)) run.problems.push(`refused ${t} recorded`);
    for (const t of types) if (!run.all.has(t) && !OWN_EVENTS.has(t)) run.problems.push(`unexpected ${t} in the chain`);
    const ours = types.filter((t) => !OWN_EVENTS.has(t));
    if (new Set(ours).size !== ours.length) run.problems.push(`an event recorded twice: ${ours.filter((t, i) => ours.indexOf(t) !== i).join(', ')}`);
  } catch (err) {
    run.problems.push(`threw: ${(err as Error).stack ?? String(err)}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return run.problems.length === 0 ? [] : [`seed ${seed}: ${run.problems.join('; ')}`, ...run.steps.map((s) => `  ${s}`)];
}

/** A seed that never finishes (a writer or open() waiting forever) is a failure too. */
function withDeadline(seed: number): Promise<string[]> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<string[]>((resolve) => {
    timer = setTimeout(() => resolve([`seed ${seed}: still running after ${SEED_DEADLINE_MS} ms`]), SEED_DEADLINE_MS);
  });
  return Promise.race([runSeed(seed), hung]).finally(() => clearTimeout(timer));
}

describe('audit writer under random faults', () => {
  it(`keeps every acknowledged event and no refused one (${SEEDS.length} seeds)`, { timeout: 60_000 + SEEDS.length * 1000 }, async () => {
    const report: string[] = [];
    for (let i = 0; i < SEEDS.length; i += PARALLEL) {
      const results = await Promise.all(SEEDS.slice(i, i + PARALLEL).map(withDeadline));
      for (const r of results) report.push(...r);
    }
    expect(report.join('\n')).toBe('');
  });
});
