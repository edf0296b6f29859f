import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { JournalStore } from '../../src/grants/journal-store.js';
import { tempDir } from '../helpers/gateway.js';

/** The embedded journal compacts itself while running, so its size follows its live data, and a crash at any moment loses nothing acknowledged. */

const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function journalFile(): Promise<string> {
  const dir = await tempDir();
  dirs.push(dir);
  return join(dir, 'state.journal');
}

describe('embedded journal compaction while running', () => {
  it('keeps the file within twice its live data plus the garbage allowance, through overwrites and deletes, and reopens to the same data', async () => {
    const file = await journalFile();
    const GARBAGE = 8 * 1024;
    const store = await JournalStore.open(file, { compactGarbageBytes: GARBAGE });
    let largest = 0;
    try {
      for (let i = 0; i < 2_000; i++) {
        await store.set(`k${i % 7}`, `value ${i} ${'x'.repeat(200)}`);
        if (i % 3 === 0) await store.set(`gone${i}`, 'y'.repeat(300));
        if (i % 3 === 0) await store.delete(`gone${i}`);
        const onDisk = (await stat(file)).size;
        largest = Math.max(largest, onDisk);
        const { live } = store.sizes();
        // The write that makes a compaction due does not wait for it: allow that one line over.
        expect(onDisk).toBeLessThanOrEqual(2 * live + GARBAGE + 400);
      }
      // Unbounded, ~1 MB would have been appended.
      expect(largest).toBeLessThan(2 * store.sizes().live + GARBAGE + 400);
      await store.delete('k6');
      await store.set('last', 'written after the compactions');
    } finally {
      await store.disconnect();
    }
    const reopened = await JournalStore.open(file);
    try {
      for (let k = 0; k < 6; k++) {
        const last = 1_999 - ((1_999 - k + 7) % 7);
        expect(await reopened.get(`k${k}`)).toBe(`value ${last} ${'x'.repeat(200)}`);
      }
      expect(await reopened.get('k6')).toBeUndefined();
      expect(await reopened.get('last')).toBe('written after the compactions');
      expect([...reopened.keys()].sort()).toEqual(['k0', 'k1', 'k2', 'k3', 'k4', 'k5', 'last']);
    } finally {
      await reopened.disconnect();
    }
  });

  it('a compaction cut short before its rename (a temp file left behind) leaves the journal whole', async () => {
    const file = await journalFile();
    const store = await JournalStore.open(file);
    await store.set('a', 'one');
    await store.set('b', 'two');
    await store.disconnect();
    await writeFile(`${file}.tmp`, '{"k":"a","v":"half-written compaction');
    const reopened = await JournalStore.open(file);
    try {
      expect(await reopened.get('a')).toBe('one');
      expect(await reopened.get('b')).toBe('two');
    } finally {
      await reopened.disconnect();
    }
  });

  it('kill -9 while writing and compacting: every acknowledged write is there on reopen', async () => {
    const file = await journalFile();
    // A writer in its own process, compacting every few KB, reporting each acknowledged write.
    const module = pathToFileURL(resolve('dist/grants/journal-store.js')).href;
    const script = `
      const { JournalStore } = await import(${JSON.stringify(module)});
      const store = await JournalStore.open(${JSON.stringify(file)}, { compactGarbageBytes: 4096 });
      for (let i = 0; ; i++) {
        await store.set('k' + (i % 5), String(i).padStart(8, '0') + 'x'.repeat(300));
        if (i % 4 === 0) await store.delete('k' + ((i + 2) % 5));
        process.stdout.write(i + '\\n');
      }`;
    for (let round = 0; round < 3; round++) {
      const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      await new Promise((r) => setTimeout(r, 400 + round * 150));
      const exited = once(child, 'exit');
      child.kill('SIGKILL');
      await exited;
      const acked = out.split('\n').filter((l) => /^\d+$/.test(l)).map(Number);
      expect(acked.length, 'the writer acknowledged writes before the kill').toBeGreaterThan(20);
      const lastAcked = acked.at(-1)!;
      // What the journal must hold: every write through the last acknowledged one, plus possibly
      // the next iteration's set and then its delete (done, but killed before being reported).
      const value = (i: number): string => String(i).padStart(8, '0') + 'x'.repeat(300);
      const state = new Map<string, string>();
      const step = (i: number, withDelete: boolean): void => {
        state.set(`k${i % 5}`, value(i));
        if (withDelete && i % 4 === 0) state.delete(`k${(i + 2) % 5}`);
      };
      for (let i = 0; i <= lastAcked; i++) step(i, true);
      const allowed = [new Map(state)];
      step(lastAcked + 1, false);
      allowed.push(new Map(state));
      step(lastAcked + 1, true);
      allowed.push(new Map(state));
      const store = await JournalStore.open(file);
      try {
        const found = new Map<string, string>();
        for (const key of store.keys()) if (key !== 'round') found.set(key, (await store.get<string>(key))!);
        const same = (m: Map<string, string>): boolean => m.size === found.size && [...m].every(([k, v]) => found.get(k) === v);
        expect(allowed.some(same), `journal after kill at ${lastAcked}: ${[...found].map(([k, v]) => `${k}=${v.slice(0, 8)}`).join(' ')}`).toBe(true);
        if (round > 0) expect(await store.get('round')).toBe(String(round - 1));
        await store.set('round', String(round));
      } finally {
        await store.disconnect();
      }
      expect((await readFile(file, 'utf8')).endsWith('\n')).toBe(true); // compacted on open: whole lines only
    }
  }, 60_000);
});
