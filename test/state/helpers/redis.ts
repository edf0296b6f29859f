import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.js';

export interface TestRedis {
  url: string;
  port: number;
  /** Stops the server abruptly (SIGKILL); data survives in the AOF for start(). */
  kill(): Promise<void>;
  /** SIGSTOP / SIGCONT: a Redis that hangs without closing connections. */
  pause(): void;
  resume(): void;
  /** Starts it again on the same port and dir (no-op while it runs). */
  start(): Promise<void>;
  /** Sends one command and returns the raw reply (e.g. FLUSHALL). */
  command(...args: string[]): Promise<string>;
  /** Kills the server and removes its dir. */
  stop(): Promise<void>;
}

const BIN = process.env['REDIS_SERVER'] ?? 'redis-server';

/**
 * A private redis-server on a free loopback port in a temp dir. Persistence `aof` (default): AOF
 * on, fsync always. `snapshot`: no AOF and no automatic saves — only what an explicit `SAVE`
 * wrote survives a kill, as with RDB snapshots (or AOF everysec losing its last second).
 */
export async function startRedis(opts: { persistence?: 'aof' | 'snapshot' } = {}): Promise<TestRedis> {
  const persistence = opts.persistence === 'snapshot' ? ['--appendonly', 'no'] : ['--appendonly', 'yes', '--appendfsync', 'always'];
  const dir = await mkdtemp(join(tmpdir(), 'pamgate-redis-'));
  let port = 0;
  let child: ChildProcess | null = null;

  const launch = async (): Promise<void> => {
    if (child && child.exitCode === null && child.signalCode === null) return; // already running
    const proc = spawn(BIN, ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', ...persistence, '--protected-mode', 'no', '--loglevel', 'warning'], { stdio: ['ignore', 'ignore', 'inherit'] });
    child = proc;
    const exited = once(proc, 'exit').then(() => false);
    const deadline = Date.now() + 5_000;
    while (Date.now() < deadline) {
      const ok = await Promise.race([ping(port), exited]);
      if (ok) return;
      if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`redis-server exited (${proc.exitCode ?? proc.signalCode}) on port ${port}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error('redis-server did not answer PING within 5 s');
  };

  for (let attempt = 0; ; attempt++) {
    port = await freePort();
    try {
      await launch();
      break;
    } catch (err) {
      await killChild(child);
      if (attempt >= 2) {
        await rm(dir, { recursive: true, force: true });
        throw err;
      }
    }
  }

  const redis: TestRedis = {
    url: `redis://127.0.0.1:${port}`,
    port,
    kill: () => killChild(child),
    pause: () => void child?.kill('SIGSTOP'),
    resume: () => void child?.kill('SIGCONT'),
    start: launch,
    command: (...args) => send(port, args),
    async stop() {
      await killChild(child);
      await rm(dir, { recursive: true, force: true });
    },
  };
  return redis;
}

async function killChild(child: ChildProcess | null): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
}

async function ping(port: number): Promise<boolean> {
  try {
    return (await send(port, ['PING'])).startsWith('+PONG');
  } catch {
    return false;
  }
}

/** Minimal RESP client: one command, the first reply chunk. */
function send(port: number, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1');
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error('redis command timed out'));
    }, 2_000);
    sock.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.once('data', (d) => {
      clearTimeout(timer);
      sock.end();
      resolve(d.toString('utf8'));
    });
    sock.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`);
  });
}
