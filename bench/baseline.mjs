// The baseline: bare http-proxy, what a team would run instead of the gateway (issue 5), with a
// keep-alive agent (maxSockets 512, as the gateway's undici pool has 512 connections) and
// X-Forwarded-*, streaming the body and looking at nothing.
// usage: node bench/baseline.mjs UPSTREAM_URL  → prints its URL on stdout
import { Agent, createServer } from 'node:http';
import httpProxy from 'http-proxy';

const upstream = process.argv[2];
if (!upstream) {
  process.stderr.write('usage: node bench/baseline.mjs UPSTREAM_URL\n');
  process.exit(2);
}
const agent = new Agent({ keepAlive: true, maxSockets: 512, keepAliveMsecs: 1000 });
const proxy = httpProxy.createProxyServer({ target: upstream, agent, xfwd: true });
proxy.on('error', (err, _req, res) => {
  if (typeof res.writeHead === 'function' && !res.headersSent) {
    res.writeHead(502, { 'content-type': 'text/plain' });
    res.end(`upstream error: ${err.message}`);
  } else {
    res.destroy();
  }
});
const server = createServer((req, res) => proxy.web(req, res));
server.keepAliveTimeout = 5_000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`http://127.0.0.1:${server.address().port}\n`);
});
process.on('SIGTERM', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
  agent.destroy();
});
