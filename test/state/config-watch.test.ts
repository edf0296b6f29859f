import { spawn, spawnSync } from 'node:child_process';
import { mkdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { exportJWK, generateKeyPair } from 'jose';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/gateway.js';
import { startUpstreamProcess, type CountingUpstream } from '../helpers/upstream.js';
import { auditEvents, call } from './helpers/flows.js';
import { startStateGateway, type InProcGateway } from './helpers/inproc.js';
import { STATE_POLICIES, STATE_POLICIES_PLUS } from './helpers/policies.js';
import { killAllGateways, spawnGateway } from './helpers/process.js';
import { until } from './helpers/wait.js';

const NEW_TASK = 'New-MailboxExportRequest';

let upstream: CountingUpstream;
const dirs: string[] = [];
const gateways: InProcGateway[] = [];
beforeAll(async () => {
  upstream = await startUpstreamProcess();
});
afterEach(async () => {
  await Promise.all(gateways.splice(0).map((g) => g.close()));
});
afterAll(async () => {
  await killAllGateways();
  await upstream?.stop();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function dir(prefix?: string): Promise<string> {
  const d = await tempDir(prefix);
  dirs.push(d);
  return d;
}

async function start(configPath: string, opts: { configPollMs?: number; watchConfig?: boolean; log?: pino.Logger } = {}): Promise<InProcGateway> {
  const gw = await startStateGateway({ policies: '', configPath, upstreamUrl: upstream.url, dataDir: await dir(), watchConfig: opts.watchConfig ?? true, ...opts });
  gateways.push(gw);
  return gw;
}

describe('policy file watch', () => {
  it('follows a Kubernetes ConfigMap update (the ..data symlink is swapped; policies.yaml itself is never touched)', async () => {
    // The layout kubelet keeps in a ConfigMap volume.
    const cm = await dir('pamgate-cm-');
    await mkdir(join(cm, '..2026_01_01_00_00_00.1'));
    await writeFile(join(cm, '..2026_01_01_00_00_00.1', 'policies.yaml'), STATE_POLICIES);
    await symlink('..2026_01_01_00_00_00.1', join(cm, '..data'));
    await symlink('..data/policies.yaml', join(cm, 'policies.yaml'));
    // No poll: only the directory watch can notice.
    const gw = await start(join(cm, 'policies.yaml'), { configPollMs: 0 });
    expect(await call(gw.proxyUrl, 'una@contoso.com', NEW_TASK)).toBe(200); // not gated yet

    // kubelet's atomic update: new timestamped dir, new symlink, renamed over ..data, old dir removed.
    await mkdir(join(cm, '..2026_01_01_00_05_00.2'));
    await writeFile(join(cm, '..2026_01_01_00_05_00.2', 'policies.yaml'), STATE_POLICIES_PLUS);
    await symlink('..2026_01_01_00_05_00.2', join(cm, '..data_tmp'));
    await rename(join(cm, '..data_tmp'), join(cm, '..data'));
    await rm(join(cm, '..2026_01_01_00_00_00.1'), { recursive: true });

    await until('the ConfigMap update to apply', async () => (await call(gw.proxyUrl, 'una@contoso.com', NEW_TASK)) === 403, 3_000, 25);
    expect((await auditEvents(gw.dataDir, 'policy.loaded')).map((e) => e['policies'])).toEqual([4, 5]);
  });

  it('polls as a backstop where the watch sees nothing (a symlink to a file in another directory)', async () => {
    const real = join(await dir('pamgate-real-'), 'policies.yaml');
    await writeFile(real, STATE_POLICIES);
    const link = join(await dir('pamgate-link-'), 'policies.yaml');
    await symlink(real, link);
    const gw = await start(link, { configPollMs: 200 });
    expect(await call(gw.proxyUrl, 'vic@contoso.com', NEW_TASK)).toBe(200);
    await writeFile(real, STATE_POLICIES_PLUS); // no event in the watched directory
    await until('the poll to pick it up', async () => (await call(gw.proxyUrl, 'vic@contoso.com', NEW_TASK)) === 403, 3_000, 25);
    await new Promise((r) => setTimeout(r, 500)); // more polls of the same bytes: no more reloads
    expect((await auditEvents(gw.dataDir, 'policy.loaded')).map((e) => e['policies'])).toEqual([4, 5]);
  });

  it('a steady stream of other events in the directory does not hold a change back', async () => {
    const cfgDir = await dir('pamgate-busy-');
    const config = join(cfgDir, 'policies.yaml');
    await writeFile(config, STATE_POLICIES);
    const gw = await start(config, { configPollMs: 0 });
    let busy = true;
    const noise = (async () => {
      for (let i = 0; busy; i++) {
        await writeFile(join(cfgDir, 'noise.log'), String(i));
        await new Promise((r) => setTimeout(r, 20)); // always within the 150 ms debounce
      }
    })();
    try {
      await new Promise((r) => setTimeout(r, 200));
      await writeFile(config + '.tmp', STATE_POLICIES_PLUS);
      await rename(config + '.tmp', config);
      await until('the change to apply despite the noise', async () => (await call(gw.proxyUrl, 'wes@contoso.com', NEW_TASK)) === 403, 3_000, 25);
    } finally {
      busy = false;
      await noise;
    }
  });
});

describe('a jwksFile that cannot be read on reload', () => {
  const withJwks = (path: string): string => STATE_POLICIES_PLUS.replace('secret: ${PAMGATE_JWT_SECRET}', `jwksFile: ${path}`);

  it('unreadable when the token verifier is built (it changed after the load check): a rejected reload, audited, old policies and verifier kept', async () => {
    // The policy loader checks the jwksFile, then the gateway reads it again to build the verifier.
    // A named pipe serves a valid JWKS to the first read and garbage to the second: the file
    // changing in between (a key rotation writing it in place), made deterministic. (The pause lets
    // the first reader see the end of the first write before the second writer opens the pipe.)
    const cfgDir = await dir('pamgate-jwks-');
    const config = join(cfgDir, 'policies.yaml');
    await writeFile(config, STATE_POLICIES);
    const dataDir = await dir();
    const gw = await spawnGateway({ dataDir, configPath: config, upstreamUrl: upstream.url, env: { PAMGATE_CONFIG_WATCH: 'off' } });
    expect(await call(gw.proxyUrl, 'ann@contoso.com', 'New-JournalRule')).toBe(403);

    const { publicKey } = await generateKeyPair('RS256', { extractable: true });
    const good = join(cfgDir, 'good-jwks.json');
    await writeFile(good, JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' }] }));
    const pipe = join(cfgDir, 'jwks.json');
    expect(spawnSync('mkfifo', [pipe]).status).toBe(0);
    const writer = spawn('sh', ['-c', 'cat "$1" > "$2" && sleep 1 && printf "not a JWKS" > "$2"', 'sh', good, pipe], { stdio: 'ignore' });
    try {
      await writeFile(config, withJwks(pipe));
      gw.child.kill('SIGHUP');
      const rejected = await until('policy.rejected', async () => (await auditEvents(dataDir, 'policy.rejected'))[0], 5_000, 25);
      expect(rejected['errors']).toEqual([expect.stringMatching(/policies\.yaml:\d+:\d+: identity\.jwt\.jwksFile .*jwks\.json: cannot build the token verifier/)]);
    } finally {
      writer.kill('SIGKILL');
    }
    expect(gw.logs.some((l) => l.includes('policy file rejected') && l.includes('cannot build the token verifier'))).toBe(true);
    expect((await auditEvents(dataDir, 'policy.loaded')).map((e) => e['policies'])).toEqual([4]);
    // The old policies (the new task is not gated) and the old verifier (HS256 tokens still verify).
    expect(await call(gw.proxyUrl, 'ann@contoso.com', NEW_TASK)).toBe(200);
    expect(await call(gw.proxyUrl, 'ann@contoso.com', 'New-JournalRule')).toBe(403);
    expect(await call(gw.proxyUrl, null, 'New-JournalRule')).toBe(401);
    expect(gw.stderr()).not.toContain('reload failed');
    expect(await gw.term()).toBe(0);
  });

  it('missing or not a JWKS: a rejected reload, old policies and verifier kept, policy.rejected audited with the error', async () => {
    const cfgDir = await dir('pamgate-jwks-');
    const config = join(cfgDir, 'policies.yaml');
    await writeFile(config, STATE_POLICIES);
    const gw = await start(config, { watchConfig: false });
    expect(await call(gw.proxyUrl, 'xia@contoso.com', 'New-JournalRule')).toBe(403); // token verified (not 401), no grant

    const missing = join(cfgDir, 'no-such-jwks.json');
    await writeFile(config, withJwks(missing));
    const r1 = await gw.reload();
    expect(r1.ok).toBe(false);
    const notJson = join(cfgDir, 'jwks.json');
    await writeFile(notJson, 'this is not a JWKS');
    await writeFile(config, withJwks(notJson));
    const r2 = await gw.reload();
    expect(r2.ok).toBe(false);

    const rejected = await auditEvents(gw.dataDir, 'policy.rejected');
    expect(rejected).toHaveLength(2);
    expect(rejected[0]!['errors']).toEqual([expect.stringMatching(/policies\.yaml:\d+:\d+: .*jwksFile.*no-such-jwks\.json/)]);
    expect(rejected[1]!['errors']).toEqual([expect.stringMatching(/policies\.yaml:\d+:\d+: .*jwksFile/)]);
    expect((await auditEvents(gw.dataDir, 'policy.loaded')).map((e) => e['policies'])).toEqual([4]);
    // Still the old policies (the new task is not gated) and the old verifier (HS256 tokens work).
    expect(await call(gw.proxyUrl, 'xia@contoso.com', NEW_TASK)).toBe(200);
    expect(await call(gw.proxyUrl, 'xia@contoso.com', 'New-JournalRule')).toBe(403);
    expect(await call(gw.proxyUrl, null, 'New-JournalRule')).toBe(401);
  });

  it('through the file watch too', async () => {
    const cfgDir = await dir('pamgate-jwks-');
    const config = join(cfgDir, 'policies.yaml');
    await writeFile(config, STATE_POLICIES);
    const lines: string[] = [];
    const gw = await start(config, { log: pino({ level: 'info' }, { write: (l: string) => void lines.push(l) }) });
    await writeFile(config + '.tmp', withJwks(join(cfgDir, 'gone.json')));
    await rename(config + '.tmp', config);
    await until('policy.rejected', async () => (await auditEvents(gw.dataDir, 'policy.rejected')).length === 1, 3_000, 25);
    expect(lines.some((l) => l.includes('policy file rejected') && l.includes('jwksFile'))).toBe(true);
    expect(await call(gw.proxyUrl, 'yan@contoso.com', 'New-JournalRule')).toBe(403);
  });
});
