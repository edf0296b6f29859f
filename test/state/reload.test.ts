import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/gateway.js';
import { auditEvents, call } from './helpers/flows.js';
import { startStateGateway, type InProcGateway } from './helpers/inproc.js';
import { STATE_POLICIES, STATE_POLICIES_PLUS } from './helpers/policies.js';
import { spawnGateway, type GatewayProcess } from './helpers/process.js';
import { useUpstream } from './helpers/suite.js';
import { until } from './helpers/wait.js';

const INVALID = STATE_POLICIES_PLUS.replace('approvals: 2', 'approvals: two');
const NEW_TASK = 'New-MailboxExportRequest';

const upstreamOf = useUpstream();

/** Replaces the file the way editors and config managers do: write a temp file, rename over. */
async function replaceFile(path: string, text: string): Promise<void> {
  await writeFile(path + '.tmp', text);
  await rename(path + '.tmp', path);
}

describe('reload on file change (in process)', () => {
  let gw: InProcGateway;
  const lines: string[] = [];
  beforeAll(async () => {
    const dataDir = await tempDir();
    const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
    gw = await startStateGateway({ policies: STATE_POLICIES, upstreamUrl: upstreamOf().url, dataDir, watchConfig: true, log });
  });
  afterAll(async () => {
    await gw?.close();
  });

  it('swaps in a valid file, keeps the old policies for an invalid one (audited and logged), and takes the next valid one', async () => {
    expect(await call(gw.proxyUrl, 'rob@contoso.com', NEW_TASK)).toBe(200); // not gated yet

    await replaceFile(gw.configPath, STATE_POLICIES_PLUS);
    await until('the new policy to apply', async () => (await call(gw.proxyUrl, 'rob@contoso.com', NEW_TASK)) === 403, 3_000, 25);
    const loaded = await auditEvents(gw.dataDir, 'policy.loaded');
    expect(loaded.at(-1)).toMatchObject({ type: 'policy.loaded', policies: 5 });

    const forwardedBefore = await upstreamOf().count(NEW_TASK);
    await writeFile(gw.configPath, INVALID); // in place this time
    // An in-place write can be seen half-done (an empty file) first; that read is rejected too. Wait for the whole one.
    const rejected = await until(
      'policy.rejected for the invalid file',
      async () => (await auditEvents(gw.dataDir, 'policy.rejected')).find((e) => JSON.stringify(e['errors']).includes('approvals')),
      3_000,
      25,
    );
    expect(rejected['errors']).toEqual([expect.stringMatching(/policies\.yaml:\d+:\d+: .*approvals/)]);
    expect(lines.some((l) => l.includes('policy file rejected') && l.includes('approvals'))).toBe(true);
    // The previous (valid, newer) policies are still in force, completely.
    expect(await call(gw.proxyUrl, 'rob@contoso.com', NEW_TASK)).toBe(403);
    expect(await call(gw.proxyUrl, 'rob@contoso.com', 'Remove-Mailbox')).toBe(403);
    expect(await call(gw.proxyUrl, 'rob@contoso.com', 'Get-Mailbox')).toBe(200);
    expect(await upstreamOf().count(NEW_TASK)).toBe(forwardedBefore);

    await replaceFile(gw.configPath, STATE_POLICIES);
    await until('the original policies again', async () => (await call(gw.proxyUrl, 'rob@contoso.com', NEW_TASK)) === 200, 3_000, 25);

    // An explicit reload (what SIGHUP does) of a just-written file is not repeated by the watch.
    await writeFile(gw.configPath, STATE_POLICIES_PLUS);
    expect(await gw.reload()).toEqual({ ok: true });
    await new Promise((r) => setTimeout(r, 400)); // longer than the watch's debounce: a duplicate would show
    // start-up, PLUS, back, PLUS again: one policy.loaded each.
    expect((await auditEvents(gw.dataDir, 'policy.loaded')).map((e) => e['policies'])).toEqual([4, 5, 4, 5]);
  });
});

describe('reload on SIGHUP (process, file watch off)', () => {
  let gw: GatewayProcess;
  let dataDir: string;
  let config: string;
  beforeAll(async () => {
    dataDir = await tempDir();
    config = join(dataDir, 'policies.yaml');
    await writeFile(config, STATE_POLICIES);
    gw = await spawnGateway({ dataDir, configPath: config, upstreamUrl: upstreamOf().url, env: { PAMGATE_CONFIG_WATCH: 'off' } });
  });

  it('applies a valid file only when told, and refuses an invalid one without a gap', async () => {
    await writeFile(config, STATE_POLICIES_PLUS);
    await new Promise((r) => setTimeout(r, 300)); // the watch is off: a change alone does nothing
    expect(await call(gw.proxyUrl, 'sam@contoso.com', NEW_TASK)).toBe(200);

    gw.child.kill('SIGHUP');
    await until('SIGHUP reload', async () => (await call(gw.proxyUrl, 'sam@contoso.com', NEW_TASK)) === 403, 3_000, 25);

    await writeFile(config, INVALID);
    // Hammer the proxy while the invalid file is offered: every answer comes from the valid policies.
    const statuses: number[] = [];
    let done = false;
    const load = (async () => {
      while (!done) statuses.push(await call(gw.proxyUrl, 'sam@contoso.com', NEW_TASK));
    })();
    gw.child.kill('SIGHUP');
    await until('policy.rejected', async () => (await auditEvents(dataDir, 'policy.rejected')).length === 1, 3_000, 25);
    done = true;
    await load;
    expect(statuses.length).toBeGreaterThan(0);
    expect(new Set(statuses)).toEqual(new Set([403]));
    expect(gw.logs.some((l) => l.includes('policy file rejected') && l.includes('approvals'))).toBe(true);
    expect(gw.child.exitCode).toBeNull(); // still serving
    expect(await call(gw.proxyUrl, 'sam@contoso.com', 'Get-Mailbox')).toBe(200);
  });
});
