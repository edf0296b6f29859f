import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { readLeniently, type Executed } from './lenient-reader.js';

/**
 * The lenient reference upstream as a real HTTP server: it "runs" every command
 * readLeniently() finds and records it. Its own bookkeeping lives under a random path
 * prefix so nothing sent through the gateway can reset or fake it.
 */
export function createLenientServer(controlPrefix: string): { server: Server; executed: Executed[] } {
  const executed: Executed[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const target = req.url ?? '/';
      if (target === `${controlPrefix}/executed`) return reply(res, 200, executed);
      if (target === `${controlPrefix}/reset`) {
        executed.length = 0;
        return reply(res, 200, {});
      }
      const reading = readLeniently({ method: req.method ?? 'GET', target, headers: req.headers, body: Buffer.concat(chunks) });
      if (reading.status !== 200) return reply(res, reading.status, { error: { code: 'BadRequest', message: reading.error } });
      executed.push(...reading.executed);
      reply(res, 200, { value: reading.executed.map((e) => ({ cmdlet: e.cmdlet, result: 'ok (lenient upstream)' })) });
    });
  });
  server.keepAliveTimeout = 30_000;
  return { server, executed };
}

function reply(res: import('node:http').ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export interface LenientUpstream {
  url: string;
  /** Everything the upstream ran, in order. */
  executed(): Promise<Executed[]>;
  /** Canonical names of the gated cmdlets it ran. */
  gatedExecuted(): Promise<string[]>;
  reset(): Promise<void>;
  stop(): Promise<void>;
  process: ChildProcess;
}

const SELF = fileURLToPath(import.meta.url);
const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** Runs the reference upstream in its own process (its own event loop, like a real server). */
export async function startLenientUpstream(): Promise<LenientUpstream> {
  const child = spawn(process.execPath, ['--import', 'tsx', SELF], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  child.stdout!.setEncoding('utf8');
  const { url, control } = await new Promise<{ url: string; control: string }>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: string) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(out.slice(0, nl)) as { url: string; control: string });
    });
    child.once('exit', (code) => reject(new Error(`lenient upstream exited with ${code}`)));
  });
  const executed = async (): Promise<Executed[]> => (await (await fetch(`${url}${control}/executed`)).json()) as Executed[];
  return {
    url,
    process: child,
    executed,
    gatedExecuted: async () => (await executed()).filter((e) => e.gated).map((e) => e.cmdlet),
    reset: async () => {
      await fetch(`${url}${control}/reset`, { method: 'POST' });
    },
    stop: async () => {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}

// `node --import tsx test/security/lenient-upstream.ts` serves on an ephemeral port and prints {url, control}.
if (pathToFileURL(process.argv[1] ?? '').href === import.meta.url) {
  const control = `/__lenient-${randomBytes(8).toString('hex')}`;
  const { server } = createLenientServer(control);
  server.listen(0, '127.0.0.1', () => {
    const port = (server.address() as AddressInfo).port;
    process.stdout.write(`${JSON.stringify({ url: `http://127.0.0.1:${port}`, control })}\n`);
  });
  process.on('SIGTERM', () => {
    server.closeAllConnections();
    server.close(() => process.exit(0));
  });
}
