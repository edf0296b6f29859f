import { writeFile } from 'node:fs/promises';
import { createServer, connect, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StartupError } from '../../src/gateway.js';
import { startTestGateway, tempDir } from '../helpers/gateway.js';
import { TEST_POLICIES } from '../helpers/policies.js';
import { freePort, runCli } from '../helpers/process.js';
import { TEST_SECRET } from '../helpers/tokens.js';
import { startUpstreamProcess, type CountingUpstream } from '../helpers/upstream.js';

function occupy(port: number): Promise<Server> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.listen(port, '127.0.0.1', () => resolve(srv));
  });
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ port, host: '127.0.0.1' });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** One line on stderr, `pamgate: …`, no stack trace, no error class name. */
function expectOneLine(stderr: string, pattern: RegExp): void {
  const lines = stderr.trimEnd().split('\n');
  expect(lines, stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^pamgate: /);
  expect(lines[0]).toMatch(pattern);
  expect(lines[0]).not.toMatch(/\b(TypeError|RangeError|Error|StartupError)\b:|\bat .*:\d+:\d+/);
}

describe('a start that cannot complete: one line, nothing listening, exit 1', () => {
  let dir: string;
  let config: string;
  let upstream: CountingUpstream;
  beforeAll(async () => {
    upstream = await startUpstreamProcess();
    dir = await tempDir();
    config = join(dir, 'policies.yaml');
    await writeFile(config, TEST_POLICIES);
  });
  afterAll(() => upstream?.stop());

  const serve = async (env: Record<string, string>) => {
    const [port, adminPort] = [await freePort(), await freePort()];
    const base = { HOST: '127.0.0.1', PORT: String(port), ADMIN_PORT: String(adminPort), PAMGATE_CONFIG: config, PAMGATE_DATA_DIR: join(dir, `data-${port}`), PAMGATE_JWT_SECRET: TEST_SECRET, UPSTREAM_URL: upstream.url };
    return { port, adminPort, run: (over: Record<string, string> = {}) => runCli(['serve'], { ...base, ...env, ...over }) };
  };

  it('the control port in use: names the address, and the proxy port it had bound is released', async () => {
    const s = await serve({});
    const blocker = await occupy(s.adminPort);
    try {
      const r = await s.run();
      expect(r.code).toBe(1);
      expectOneLine(r.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${s.adminPort}: address in use`));
      expect(await listening(s.port)).toBe(false);
    } finally {
      blocker.close();
    }
  });

  it('in-process: startGateway rejects with a StartupError, closes the listener it opened and releases the data dir', async () => {
    const adminPort = await freePort();
    const port = await freePort();
    const blocker = await occupy(adminPort);
    const dataDir = await tempDir();
    try {
      const err = await startTestGateway({ policies: TEST_POLICIES, upstreamUrl: upstream.url, port, adminPort, dataDir }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StartupError);
      expect((err as Error).message).toMatch(/address in use/);
      expect(await listening(port)).toBe(false);
    } finally {
      blocker.close();
    }
    // The data dir lock went with it: the next start on the same dir succeeds.
    const gw = await startTestGateway({ policies: TEST_POLICIES, upstreamUrl: upstream.url, dataDir });
    await gw.close();
  });

  it.each([
    ['not a URL', 'upstream.example:443/x y', /UPSTREAM_URL "upstream\.example:443\/x y" (is not a URL|must be an http)/],
    ['no scheme', '::::', /UPSTREAM_URL "::::" is not a URL/],
    ['another scheme', 'ftp://upstream.example', /must be an http:\/\/ or https:\/\/ URL/],
  ])('a malformed UPSTREAM_URL (%s)', async (_what, url, pattern) => {
    const s = await serve({});
    const r = await s.run({ UPSTREAM_URL: url });
    expect(r.code).toBe(1);
    expectOneLine(r.stderr, pattern);
    expect(r.stdout).not.toContain('pamgate started');
  });

  it('an unreadable certificate, a certificate without a key, a bad port', async () => {
    const s = await serve({});
    const missing = await s.run({ PAMGATE_TLS_CERT: join(dir, 'nope.pem'), PAMGATE_TLS_KEY: join(dir, 'nope.key') });
    expect(missing.code).toBe(1);
    expectOneLine(missing.stderr, /cannot read the TLS certificate .*nope\.pem: no such file; set PAMGATE_TLS_CERT/);
    const half = await s.run({ PAMGATE_TLS_CERT: join(dir, 'nope.pem') });
    expect(half.code).toBe(1);
    expectOneLine(half.stderr, /PAMGATE_TLS_KEY is not set/);
    const port = await s.run({ PORT: 'eighty' });
    expect(port.code).toBe(1);
    expectOneLine(port.stderr, /PORT must be a port number/);
  });

  it('a data dir that cannot be created: names it and PAMGATE_DATA_DIR', async () => {
    const s = await serve({});
    const r = await s.run({ PAMGATE_DATA_DIR: join(config, 'data') }); // under a regular file
    expect(r.code).toBe(1);
    expectOneLine(r.stderr, /cannot write the data dir .*policies\.yaml\/data: a path component is not a directory; point PAMGATE_DATA_DIR at/);
    expect(await listening(s.port)).toBe(false);
  });

  it('no policy file: names where it was looked for and how to provide it', async () => {
    const s = await serve({});
    const r = await s.run({ PAMGATE_CONFIG: '/etc/pamgate/policies.yaml' });
    expect(r.code).toBe(1);
    expectOneLine(r.stderr, /no policy file at \/etc\/pamgate\/policies\.yaml: mount or create it there/);
  });
});

describe('an unreachable upstream at start', () => {
  it('starts anyway, with a warning and pamgate_upstream_up 0', async () => {
    const lines: string[] = [];
    const pino = (await import('pino')).default;
    const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
    const deadPort = await freePort();
    const gw = await startTestGateway({ policies: TEST_POLICIES, upstreamUrl: `http://127.0.0.1:${deadPort}`, log });
    try {
      const warn = lines.map((l) => JSON.parse(l)).find((l) => l.msg.startsWith('upstream not reachable at start'));
      expect(warn).toMatchObject({ level: 40, upstream: `http://127.0.0.1:${deadPort}` });
      const started = lines.map((l) => JSON.parse(l)).find((l) => l.msg === 'pamgate started');
      expect(started.upstreams).toEqual([{ url: `http://127.0.0.1:${deadPort}`, demo: false, reachable: false }]);
      const metrics = await (await fetch(gw.controlUrl + '/metrics')).text();
      expect(metrics).toMatch(/^pamgate_upstream_up 0$/m);
      expect(metrics).toMatch(/^pamgate_upstream_failures_total 1$/m);
    } finally {
      await gw.close();
    }
  });
});
