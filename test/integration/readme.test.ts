import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { promisify } from 'node:util';
import { afterAll, expect, it } from 'vitest';
import { tempDir } from '../helpers/gateway.js';
import { spawnGatewayAt, type GatewayProcess } from '../helpers/process.js';

const run = promisify(execFile);
let gateway: GatewayProcess | undefined;
afterAll(async () => {
  await gateway?.stop('SIGKILL');
});

async function portFree(port: number): Promise<boolean> {
  const srv = createServer();
  return new Promise((resolve) => {
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

// Keeps the README true: runs its walkthrough block, as written, against `pamgate serve`
// on the default ports with the demo upstream and the demo secret.
it('the README walkthrough runs as written: blocked → request → approve → allowed → revoked → verify', async () => {
  const readme = await readFile('README.md', 'utf8');
  const blocks = [...readme.matchAll(/```bash\n([\s\S]*?)```/g)].map((m) => m[1]!);
  expect(blocks[0]).toMatch(/^npm ci && npm start/m);
  expect(blocks[0]).toMatch(/^npm test/m);
  const walkthrough = blocks[1]!;
  expect(walkthrough).toContain('pamgate approve');

  for (const port of [8080, 8081]) expect(await portFree(port), `port ${port} must be free for the README test`).toBe(true);
  const dataDir = await tempDir();
  const env = { ...process.env, PAMGATE_DATA_DIR: dataDir, UPSTREAM_URL: '', PAMGATE_JWT_SECRET: undefined, PAMGATE_CONFIG: undefined, PORT: undefined, ADMIN_PORT: undefined, HOST: undefined };
  gateway = await spawnGatewayAt(8080, 8081, env);

  const { stdout } = await run('bash', ['-e', '-o', 'pipefail', '-c', walkthrough], { env, timeout: 60_000 });
  const replies = stdout.split('\n').filter((l) => l.startsWith('{"'));
  expect(replies[0]).toContain('"cmdlet":"Get-Mailbox"');
  expect(JSON.parse(replies[1]!).error.code).toBe('PrivilegedAccessRequired');
  expect(replies[2]).toContain('"cmdlet":"New-JournalRule"');
  expect(JSON.parse(replies[3]!).error.code).toBe('PrivilegedAccessRequired');
  expect(stdout).toMatch(/^approved by carol@contoso\.com: request \S+ \(New-JournalRule, requested by eve@contoso\.com, policy journal-rules\) is now approved/m);
  expect(stdout).toMatch(/^ok \d+ events$/m);
  expect(gateway.output()).toContain('DEMO upstream');
}, 90_000);
