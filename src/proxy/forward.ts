import { Agent, type IncomingMessage, type ServerResponse } from 'node:http';
import httpProxy from 'http-proxy';
import { sendError } from './responses.js';

/** Forwards buffered requests to the upstream over kept-alive connections. */
export class Forwarder {
  private readonly proxy: httpProxy;
  readonly agent: Agent;

  constructor(readonly upstream: string) {
    this.agent = new Agent({ keepAlive: true, maxSockets: 512, keepAliveMsecs: 1000 });
    this.proxy = httpProxy.createProxyServer({ target: upstream, agent: this.agent, xfwd: true });
    this.proxy.on('error', (err, _req, res) => {
      if ('writeHead' in res) {
        sendError(res as ServerResponse, 502, { code: 'UpstreamUnavailable', message: `upstream ${upstream} did not answer: ${err.message}` });
      } else {
        res.destroy();
      }
    });
  }

  /**
   * Sends exactly `body` on: the length is fixed so the upstream reads the same bytes the
   * gateway classified (no chunked re-framing, no Expect handshake to replay).
   */
  forward(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
    const headers = req.headers;
    if (body.length > 0 || headers['content-length'] !== undefined || headers['transfer-encoding'] !== undefined) {
      headers['content-length'] = String(body.length);
    }
    delete headers['transfer-encoding'];
    delete headers['expect'];
    // http-proxy only calls `buffer.pipe(proxyReq)`; a one-method object avoids a stream per request.
    const replay = { pipe: (dest: NodeJS.WritableStream) => dest.end(body) };
    this.proxy.web(req, res, { buffer: replay as unknown as httpProxy.ServerOptions['buffer'] });
  }

  close(): void {
    this.proxy.close();
    this.agent.destroy();
  }
}
