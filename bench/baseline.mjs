// The baseline: bare http-proxy, what a team would run instead of the gateway (issue 5), with a
// keep-alive agent (maxSockets 512, as the gateway's undici pool has 512 connections) and
// X-Forwarded-*, streaming the body and looking at nothing.
// usage: node bench/baseline.mjs UPSTREAM_URL [CERT_PEM KEY_PEM]  → prints its URL on stdout
// With a certificate and key it terminates TLS (bench/https.mjs), as the gateway does with
// PAMGATE_TLS_CERT and PAMGATE_TLS_KEY.
import { readFileSync } from 'node:fs';
import { Agent, createServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import httpProxy from 'http-proxy';

const [upstream, certFile, keyFile] = process.argv.slice(2);
if (!upstream) {
  process.stderr.write('usage: node bench/baseline.mjs UPSTREAM_URL [CERT_PEM KEY_PEM]\n');
  process.exit(2);
}
const tls = certFile && keyFile ? { cert: readFileSync(certFile), key: readFileSync(keyFile) } : null;
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
const handler = (req, res) => proxy.web(req, res);
const server = tls ? createHttpsServer(tls, handler) : createServer(handler);
server.keepAliveTimeout = 5_000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${tls ? 'https' : 'http'}://127.0.0.1:${server.address().port}\n`);
});
process.on('SIGTERM', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
  agent.destroy();
});
