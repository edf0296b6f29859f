import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { TEST_SECRET } from '../../helpers/tokens.js';

const CLI = fileURLToPath(new URL('../../../dist/cli.js', import.meta.url));

export interface GatewayProcess {
  proxyUrl: string;
  controlUrl: string;
  child: ChildProcess;
  /** Every stdout line so far (pino JSON). */
  logs: string[];
  stderr(): string;
  /** Resolves with the exit code (or signal name) once the process is gone. */
  exited: Promise<number | string>;
  kill9(): Promise<void>;
  /** SIGTERM, then the exit code. */
  term(): Promise<number | string>;
}

export interface SpawnOptions {
  dataDir: string;
  configPath: string;
  upstreamUrl: string;
  storeUrl?: string;
  env?: Record<string, string>;
}

const running = new Set<GatewayProcess>();

/** `node dist/cli.js serve` on port-0 listeners; resolves once it logs its URLs. */
export async function spawnGateway(opts: SpawnOptions): Promise<GatewayProcess> {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` before the state tests`);
  const child = spawn(process.execPath, [CLI, 'serve'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      PATH: process.env['PATH'] ?? '',
      HOST: '127.0.0.1',
      PORT: '0',
      ADMIN_PORT: '0',
      PAMGATE_DATA_DIR: opts.dataDir,
      PAMGATE_CONFIG: opts.configPath,
      UPSTREAM_URL: opts.upstreamUrl,
      PAMGATE_JWT_SECRET: TEST_SECRET,
      ...(opts.storeUrl ? { PAMGATE_STORE: opts.storeUrl } : {}),
      ...opts.env,
    },
  });
  const logs: string[] = [];
  let err = '';
  let buf = '';
  child.stdout!.setEncoding('utf8');
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => {
    err += d;
  });
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')));
  const started = new Promise<{ proxyUrl: string; controlUrl: string }>((resolve, reject) => {
    child.stdout!.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        logs.push(line);
        if (line.includes('"pamgate started"')) {
          const o = JSON.parse(line) as { proxyUrl: string; controlUrl: string };
          resolve({ proxyUrl: o.proxyUrl, controlUrl: o.controlUrl });
        }
      }
    });
    void exited.then((code) => reject(new Error(`gateway exited (${code}) before starting:\n${err}`)));
  });
  const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`gateway did not start in 10 s:\n${err}`)), 10_000).unref());
  const gp: GatewayProcess = {
    proxyUrl: '',
    controlUrl: '',
    child,
    logs,
    stderr: () => err,
    exited,
    async kill9() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
    async term() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
  running.add(gp);
  void exited.then(() => running.delete(gp));
  try {
    Object.assign(gp, await Promise.race([started, timeout]));
  } catch (e) {
    await gp.kill9();
    throw e;
  }
  return gp;
}

/** For afterAll/afterEach: SIGKILL every gateway process still running. */
export async function killAllGateways(): Promise<void> {
  await Promise.all([...running].map((g) => g.kill9()));
}

/** Runs `node dist/cli.js ...args` and returns its exit code and output. */
export async function runCli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env['PATH'] ?? '', ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code: code ?? -1, stdout, stderr };
}
