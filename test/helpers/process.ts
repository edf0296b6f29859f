import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

/** A free loopback port (bound and released). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as { port: number }).port;
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

/** Runs `pamgate …` to completion. */
export async function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const [code] = (await once(child, 'exit')) as [number];
  return { code, stdout, stderr };
}

export interface GatewayProcess {
  child: ChildProcess;
  proxyUrl: string;
  controlUrl: string;
  output(): string;
  /** SIGTERM and wait; resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** `pamgate serve` as its own process; resolves once both listeners are up. */
export async function spawnGateway(env: NodeJS.ProcessEnv): Promise<GatewayProcess> {
  return spawnGatewayAt(await freePort(), await freePort(), { ...process.env, HOST: '127.0.0.1', ...env });
}

/** `pamgate serve` on given ports with exactly `env` (PORT/ADMIN_PORT set from the ports). */
export async function spawnGatewayAt(port: number, adminPort: number, env: NodeJS.ProcessEnv): Promise<GatewayProcess> {
  const clean = Object.fromEntries(Object.entries({ ...env, PORT: String(port), ADMIN_PORT: String(adminPort) }).filter(([, v]) => v !== undefined));
  const child = spawn(process.execPath, [CLI, 'serve'], { env: clean, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`gateway did not start:\n${out}`)), 15_000);
    const check = (): void => {
      if (out.includes('"pamgate started"')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', check);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`gateway exited with ${code}:\n${out}`));
    });
  });
  return {
    child,
    proxyUrl: `http://127.0.0.1:${port}`,
    controlUrl: `http://127.0.0.1:${adminPort}`,
    output: () => out,
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      const [code] = (await once(child, 'exit')) as [number | null];
      return code;
    },
  };
}
