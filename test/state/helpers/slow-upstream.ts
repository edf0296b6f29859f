import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** An upstream that answers every call after `delayMs` (never, when null), counting arrivals and answers. */
export async function startSlowUpstream(delayMs: number | null): Promise<{ url: string; arrived: () => number; answered: () => number; close(): Promise<void> }> {
  let arrived = 0;
  let answered = 0;
  const server: Server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      arrived++;
      if (delayMs === null) return;
      setTimeout(() => {
        answered++;
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"value":[]}');
      }, delayMs);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    arrived: () => arrived,
    answered: () => answered,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
