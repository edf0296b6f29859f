// The counting mock upstream for the benchmark, in its own process (forked with an IPC
// channel by bench/run.mjs). It is the project's demo upstream (dist/demo/upstream.js:
// "runs" and counts every InvokeCommand) plus a TCP connection counter. Stats travel over
// IPC, never over HTTP, so asking for them does not disturb the connection counts.
import { startDemoUpstream } from '../dist/demo/upstream.js';

const up = await startDemoUpstream(0, '127.0.0.1');
let open = 0;
let peak = 0;
let accepted = 0;
// Connections that carried at least one request since the last stats reset: how many
// upstream connections the target under load actually used (idle pooled ones don't count).
let epoch = 1;
let used = 0;
up.server.prependListener('request', (req) => {
  const s = req.socket;
  if (s.benchEpoch !== epoch) {
    s.benchEpoch = epoch;
    used++;
  }
});
up.server.on('connection', (socket) => {
  accepted++;
  open++;
  if (open > peak) peak = open;
  socket.once('close', () => open--);
});

process.on('message', (msg) => {
  if (msg?.cmd === 'stats') {
    process.send({ id: msg.id, executed: Object.fromEntries(up.executed), accepted, open, peak, used });
    if (msg.reset) {
      peak = open;
      epoch++;
      used = 0;
    }
  }
});
process.on('SIGTERM', () => {
  up.server.closeAllConnections?.();
  void up.close().then(() => process.exit(0));
});
process.on('disconnect', () => process.exit(0));
process.send({ ready: true, url: up.url });
