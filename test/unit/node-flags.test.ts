import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

// The gateway's node flags are written in four places: the container's CMD, the compose file's
// command, `npm start`, and the benchmark (which measures the gateway as shipped). They must say
// the same thing.
const ROOT = join(import.meta.dirname, '..', '..');
const read = (file: string): string => readFileSync(join(ROOT, file), 'utf8');

/** The words between `node` and `dist/cli.js` in a command line. */
function flagsBefore(words: string[]): string[] {
  const node = words.indexOf('node');
  const cli = words.indexOf('dist/cli.js');
  if (node < 0 || cli < node) throw new Error(`no "node … dist/cli.js" in ${JSON.stringify(words)}`);
  return words.slice(node + 1, cli);
}

function dockerfileFlags(): string[] {
  const cmd = /^CMD (\[.*\])$/m.exec(read('Dockerfile'));
  if (!cmd) throw new Error('Dockerfile has no CMD in exec form');
  return flagsBefore(JSON.parse(cmd[1]!) as string[]);
}

function composeFlags(): string[] {
  const cmd = /^ {2}command: (\[.*dist\/cli\.js.*\])$/m.exec(read('docker-compose.yml'));
  if (!cmd) throw new Error('docker-compose.yml has no pamgate command');
  return flagsBefore(JSON.parse(cmd[1]!) as string[]);
}

function npmStartFlags(): string[] {
  const start = (JSON.parse(read('package.json')) as { scripts: { start: string } }).scripts.start;
  return flagsBefore(start.split('&&').at(-1)!.trim().split(/\s+/));
}

function benchFlags(): string[] {
  const m = /^const PRODUCT_NODE_FLAGS = (\[.*\]);$/m.exec(read('bench/run.mjs'));
  if (!m) throw new Error('bench/run.mjs has no PRODUCT_NODE_FLAGS');
  return JSON.parse(m[1]!.replace(/'/g, '"')) as string[];
}

describe('the node flags the gateway ships with', () => {
  it('are the same in the Dockerfile, docker-compose.yml, npm start and the benchmark', () => {
    const docker = dockerfileFlags();
    expect(docker).toEqual(expect.arrayContaining(['--initial-old-space-size=192', '--no-memory-reducer']));
    expect(composeFlags()).toEqual(docker);
    expect(npmStartFlags()).toEqual(docker);
    expect(benchFlags()).toEqual(docker);
  });

  it('are accepted by this node (an unknown V8 flag stops node before the gateway starts)', () => {
    const r = spawnSync(process.execPath, [...dockerfileFlags(), '-e', 'process.stdout.write("ok")'], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect([r.status, r.stdout]).toEqual([0, 'ok']);
  });
});
