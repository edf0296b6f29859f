import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';

/**
 * A stand-in Exchange Online admin API for demos and tests: it "runs" every cmdlet it is
 * sent on POST …/InvokeCommand and counts them. GET /__executed returns the counts.
 */
export interface DemoUpstream {
  server: Server;
  url: string;
  executed: Map<string, number>;
  close(): Promise<void>;
}

export async function startDemoUpstream(port = 0, host = '127.0.0.1'): Promise<DemoUpstream> {
  const executed = new Map<string, number>();
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = req.url ?? '/';
      if (req.method === 'GET' && url === '/__executed') return json(res, 200, Object.fromEntries(executed));
      if (req.method === 'POST' && url === '/__reset') {
        executed.clear();
        return json(res, 200, {});
      }
      if (req.method !== 'POST' || !/\/adminapi\/[^/]+\/[^/]+\/invokecommand$/i.test(url.split('?')[0]!)) {
        return json(res, 404, { error: { code: 'NotFound', message: `demo upstream has no ${req.method} ${url}` } });
      }
      let name: unknown;
      let params: unknown;
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { CmdletInput?: { CmdletName?: unknown; Parameters?: unknown } };
        name = body.CmdletInput?.CmdletName;
        params = body.CmdletInput?.Parameters ?? {};
      } catch {
        return json(res, 400, { error: { code: 'BadRequest', message: 'body is not JSON' } });
      }
      if (typeof name !== 'string') return json(res, 400, { error: { code: 'BadRequest', message: 'CmdletInput.CmdletName missing' } });
      executed.set(name, (executed.get(name) ?? 0) + 1);
      json(res, 200, { '@odata.context': `${url}#demo`, value: [{ cmdlet: name, parameters: params, result: 'ok (demo upstream)' }] });
    });
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  const addr = server.address() as AddressInfo;
  return {
    server,
    url: `http://${host}:${addr.port}`,
    executed,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

function json(res: import('node:http').ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

// `node dist/demo/upstream.js [port]` runs it as its own process and prints its URL.
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const up = await startDemoUpstream(Number(process.argv[2] ?? 0));
  process.stdout.write(`${up.url}\n`);
  process.on('SIGTERM', () => void up.close().then(() => process.exit(0)));
}
