// What one young-generation GC (scavenge) costs with N long-lived values held, by their form.
// Evidence for keeping the state off the V8 heap (docs/design/006-state-off-the-heap.md).
//
//   taskset -c 1 node --trace-gc bench/scavenge.mjs 300000 str | node bench/scavenge.mjs --summary
//
// Forms: obj (parsed objects), str (~900-byte JSON strings), buf (the same as Buffer.from: pool
// slices), own (the same, each in its own allocation, as src/grants/journal-store.ts holds them).
// Prints the heap used, then the mean of the last 200 scavenges when piped into --summary.
import { createInterface } from 'node:readline';

if (process.argv[2] === '--summary') {
  const times = [];
  for await (const line of createInterface({ input: process.stdin })) {
    const m = line.match(/Scavenge .* MB, ([\d.]+) \//);
    if (m) times.push(Number(m[1]));
    else if (!line.includes(' ms: ')) console.log(line);
  }
  const last = times.slice(-200);
  console.log(`  scavenges ${times.length}, mean of the last ${last.length}: ${(last.reduce((a, b) => a + b, 0) / last.length).toFixed(3)} ms`);
  process.exit(0);
}

const count = Number(process.argv[2] ?? 100_000);
const form = process.argv[3] ?? 'obj';
const text = (i) => JSON.stringify({ id: `req-${i}`, requester: `user${i}@x`, tasks: [`t${i}`], reason: 'x'.repeat(600) });
const held = new Map();
globalThis.held = held; // keep it alive
for (let i = 0; i < count; i++) {
  if (form === 'str') held.set(`k${i}`, text(i));
  else if (form === 'buf') held.set(`k${i}`, Buffer.from(text(i)));
  else if (form === 'own') {
    const s = text(i);
    const b = Buffer.allocUnsafeSlow(Buffer.byteLength(s));
    b.write(s);
    held.set(`k${i}`, b);
  } else held.set(`k${i}`, { id: `req-${i}`, requester: `user${i}@x`, tasks: [`t${i}`], set: new Set([`a${i}`, 'b']), params: { a: `x${i}`, b: 'y' }, approvals: [{ approver: 'a', at: `now${i}` }], s1: `aaaa${i}`, s2: `bbbb${i}`, s3: `cccc${i}`, n: i });
}

// Short-lived garbage for 3 s: every scavenge in this window pays the fixed cost of what is held.
const started = performance.now();
let made = 0;
while (performance.now() - started < 3_000) {
  const batch = [];
  for (let i = 0; i < 100; i++) batch.push({ a: i, b: `x${i}`, c: [i, i + 1] });
  made += batch.length;
}
console.log(`${form} × ${count}: heap used ${(process.memoryUsage().heapUsed / 1e6).toFixed(0)} MB, ${made} short-lived objects in 3 s`);
