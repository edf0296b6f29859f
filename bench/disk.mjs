// The disk alone: how long a synchronous (O_DSYNC) append of one audit batch's size takes on the
// filesystem the gateways' audit files live on, with nothing else running. The gateway's gated
// requests wait for one such write each, so this distribution bounds their latency from below.
// usage: node bench/disk.mjs DIR [SECONDS]   (the bench runs it pinned to the proxy's CPU)
import { closeSync, constants, openSync, unlinkSync, write } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

const dir = process.argv[2];
const seconds = Number(process.argv[3] ?? 4);
if (!dir) {
  process.stderr.write('usage: node bench/disk.mjs DIR [SECONDS]\n');
  process.exit(2);
}
/** 16 events of ~400 bytes: a typical batch under the bench's load. */
const BATCH = Buffer.alloc(16 * 400, 0x61);

/** `inFlight` writers appending at consecutive offsets, each on its own fd, for `secs` seconds. */
async function run(inFlight, secs) {
  const path = join(dir, `disk-probe-${process.pid}.bin`);
  const fds = Array.from({ length: inFlight }, () => openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_DSYNC, 0o600));
  const times = [];
  let offset = 0;
  const end = performance.now() + secs * 1000;
  try {
    await Promise.all(fds.map(async (fd) => {
      while (performance.now() < end) {
        const at = offset;
        offset += BATCH.length;
        const t0 = performance.now();
        await new Promise((resolve, reject) => write(fd, BATCH, 0, BATCH.length, at, (err) => (err ? reject(err) : resolve())));
        times.push(performance.now() - t0);
      }
    }));
  } finally {
    for (const fd of fds) closeSync(fd);
    unlinkSync(path);
  }
  times.sort((a, b) => a - b);
  const q = (p) => times[Math.min(times.length - 1, Math.floor(times.length * p))];
  return { inFlight, writesPerSec: times.length / secs, p50: q(0.5), p99: q(0.99), p999: q(0.999), max: times.at(-1) };
}

const results = [];
for (const k of [1, 2]) results.push(await run(k, seconds));
process.stdout.write(JSON.stringify(results) + '\n');
