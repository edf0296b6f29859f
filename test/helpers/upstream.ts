import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

const DEMO_UPSTREAM = fileURLToPath(new URL('../../dist/demo/upstream.js', import.meta.url));

/** The demo upstream in its own process: counts every cmdlet that reached it. */
export interface CountingUpstream {
  url: string;
  executed(): Promise<Record<string, number>>;
  count(cmdlet: string): Promise<number>;
  reset(): Promise<void>;
  stop(): Promise<void>;
  process: ChildProcess;
}

export async function startUpstreamProcess(): Promise<CountingUpstream> {
  const child = spawn(process.execPath, [DEMO_UPSTREAM, '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.setEncoding('utf8');
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (d: string) => {
      out += d;
      const line = out.split('\n')[0];
      if (out.includes('\n') && line) resolve(line.trim());
    });
    child.once('exit', (code) => reject(new Error(`upstream exited with ${code}`)));
  });
  const executed = async (): Promise<Record<string, number>> => (await (await fetch(`${url}/__executed`)).json()) as Record<string, number>;
  return {
    url,
    process: child,
    executed,
    count: async (cmdlet) => (await executed())[cmdlet] ?? 0,
    reset: async () => {
      await fetch(`${url}/__reset`, { method: 'POST' });
    },
    stop: async () => {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}
