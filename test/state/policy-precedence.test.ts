import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/gateway.js';
import { api } from '../helpers/http.js';
import { auditEvents, call, tok } from './helpers/flows.js';
import { runCli, spawnGateway } from './helpers/process.js';
import { useUpstream } from './helpers/suite.js';
import { until } from './helpers/wait.js';

// A permissive glob listed before a strict one that covers some of the same tasks must not decide
// those tasks: through `pamgate check`, a start, a reload, and the requests a real gateway files.

const upstreamOf = useUpstream();

const HEAD = `version: 1
settings:
  defaultApproverGroup: pam-approvers
identity:
  jwt:
    secret: \${PAMGATE_JWT_SECRET}
groups:
  pam-approvers: [alice@contoso.com, bob@contoso.com]
  transport-owners: [carol@contoso.com, dave@contoso.com]
policies:
`;
const TRANSPORT = `  - id: transport-rules
    task: '*-TransportRule'
    approverGroup: transport-owners
    approvals: 2
    requireTicket: true
`;
const SET_ANY = `  - id: set-any
    task: Set-*
    approval: auto
`;
const STRICT_ONLY = HEAD + TRANSPORT;
const PERMISSIVE_FIRST = HEAD + SET_ANY + TRANSPORT;

async function fileWith(text: string): Promise<{ dir: string; config: string }> {
  const dir = await tempDir();
  const config = join(dir, 'policies.yaml');
  await writeFile(config, text);
  return { dir, config };
}

const fileRequest = async (controlUrl: string, task: string): Promise<{ status: number; body: { status?: string } }> =>
  api(controlUrl, 'POST', '/api/requests', await tok('eve@contoso.com'), { task, reason: 'change the rule', ticket: 'CHG-1' });

describe('overlapping policies of the same precedence', () => {
  it('pamgate check: exit 1, FILE:LINE:COL at the later policy, naming both', async () => {
    const { config } = await fileWith(PERMISSIVE_FIRST);
    const r = await runCli(['check', config]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toEqual([
      `${config}:15:11: policies[1].task: policy "transport-rules" (task *-TransportRule) and policy "set-any" (task Set-*) both match tasks such as set-transportrule, and neither pattern contains the other: which one governs would depend on file order; narrow one of them until the two no longer meet or one lies inside the other`,
    ]);
  });

  it('the gateway refuses to start with it', async () => {
    const { dir, config } = await fileWith(PERMISSIVE_FIRST);
    const r = await spawnGateway({ dataDir: join(dir, 'data'), configPath: config, upstreamUrl: upstreamOf().url }).then(
      () => 'started',
      (err: Error) => err.message,
    );
    expect(r).toMatch(/exited \(1\)/);
    expect(r).toMatch(/policies\.yaml:15:11: policies\[1\]\.task: policy "transport-rules" .* and policy "set-any"/);
  });

  it('a reload with it keeps the old policies and audits policy.rejected: Set-TransportRule still needs two approvers', async () => {
    const { dir, config } = await fileWith(STRICT_ONLY);
    const dataDir = join(dir, 'data');
    const gw = await spawnGateway({ dataDir, configPath: config, upstreamUrl: upstreamOf().url, env: { PAMGATE_CONFIG_WATCH: 'off' } });
    await writeFile(config, PERMISSIVE_FIRST);
    gw.child.kill('SIGHUP');
    const rejected = await until('policy.rejected', async () => (await auditEvents(dataDir, 'policy.rejected'))[0], 3_000, 25);
    expect(rejected['errors']).toEqual([expect.stringMatching(/:15:11: .*"transport-rules".*"set-any"/)]);

    const r = await fileRequest(gw.controlUrl, 'Set-TransportRule');
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body.status).toBe('pending');
    expect(await call(gw.proxyUrl, 'eve@contoso.com', 'Set-TransportRule')).toBe(403);
    expect(await upstreamOf().count('Set-TransportRule')).toBe(0);
    expect(await call(gw.proxyUrl, 'eve@contoso.com', 'Set-Mailbox')).toBe(200); // the old file does not gate it
    expect(gw.child.exitCode).toBeNull();
  });

  it('nested globs load and the narrower governs whatever the order: the permissive broad one first does not approve a strict task', async () => {
    const narrow = TRANSPORT.replace("'*-TransportRule'", 'Set-Transport*');
    const { dir, config } = await fileWith(HEAD + SET_ANY + narrow);
    const gw = await spawnGateway({ dataDir: join(dir, 'data'), configPath: config, upstreamUrl: upstreamOf().url });
    const strict = await fileRequest(gw.controlUrl, 'Set-TransportConfig');
    expect(strict.body.status).toBe('pending');
    expect(await call(gw.proxyUrl, 'eve@contoso.com', 'Set-TransportConfig')).toBe(403);
    const loose = await fileRequest(gw.controlUrl, 'Set-User');
    expect(loose.body.status).toBe('approved');
    expect(await call(gw.proxyUrl, 'eve@contoso.com', 'Set-User')).toBe(200);
    const check = await runCli(['check', config]);
    expect(check.code).toBe(0);
    expect(check.stdout).toContain(`${config}:12:11: warning: policies[0].task: policy "set-any" (task Set-*) is broader than policy "transport-rules" (task Set-Transport*), which governs the tasks both match`);
  });
});
