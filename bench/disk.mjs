// The disk alone: how long a synchronous (O_DSYNC) write of one audit batch's size takes on the
// filesystem the gateways' audit files live on, with nothing else running, and the CPU it costs.
// 'in place' rewrites a zero-filled file, as the gateway's audit.wal does; 'append' grows the
// file, the alternative it was chosen over (docs/design/002-audit-write-ahead-log.md). The gateway's gated requests wait
// for one in-place write each, so that distribution bounds their latency from below.
// usage: node bench/disk.mjs DIR [SECONDS]   (the bench runs it pinned to the proxy's CPU)
import { closeSync, constants, fsyncSync, openSync, unlinkSync, write, writeSync } from 'node:fs';
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

/** `inFlight` writers at consecutive offsets, each on its own fd, for `secs` seconds; `inPlace`: over a zero-filled file. */
async function run(mode, inFlight, secs) {
  const path = join(dir, `disk-probe-${process.pid}.bin`);
  const inPlace = mode === 'in place';
  if (inPlace) {
    // Big enough for the whole run at the disk's best rate; written and synced before timing starts.
    const fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600);
    const zeros = Buffer.alloc(1 << 20);
    for (let i = 0; i < 64 * secs; i++) writeSync(fd, zeros);
    fsyncSync(fd);
    closeSync(fd);
  }
  const flags = constants.O_WRONLY | constants.O_DSYNC | (inPlace ? 0 : constants.O_CREAT | constants.O_TRUNC);
  const fds = Array.from({ length: inFlight }, () => openSync(path, flags, 0o600));
  const times = [];
  let offset = 0;
  const end = performance.now() + secs * 1000;
  const cpu0 = process.cpuUsage();
  try {
    await Promise.all(fds.map(async (fd) => {
      while (performance.now() < end) {
        const at = offset;
        offset += BATCH.length;
        if (inPlace && offset > 64 * secs * (1 << 20)) break;
        const t0 = performance.now();
        await new Promise((resolve, reject) => write(fd, BATCH, 0, BATCH.length, at, (err) => (err ? reject(err) : resolve())));
        times.push(performance.now() - t0);
      }
    }));
  } finally {
    for (const fd of fds) closeSync(fd);
    unlinkSync(path);
  }
  const cpu = process.cpuUsage(cpu0);
  times.sort((a, b) => a - b);
  const q = (p) => times[Math.min(times.length - 1, Math.floor(times.length * p))];
  return { mode, inFlight, writesPerSec: times.length / secs, cpuUsPerWrite: (cpu.user + cpu.system) / times.length, p50: q(0.5), p99: q(0.99), p999: q(0.999), max: times.at(-1) };
}

const results = [];
for (const [mode, k] of [['in place', 1], ['append', 1], ['append', 2]]) results.push(await run(mode, k, seconds));
process.stdout.write(JSON.stringify(results) + '\n');
