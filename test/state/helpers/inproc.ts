import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pino from 'pino';
import { startGateway, type Gateway, type GatewayOptions } from '../../../src/gateway.js';
import { TestClock, tempDir } from '../../helpers/gateway.js';
import { TEST_SECRET } from '../../helpers/tokens.js';

export interface InProcGateway extends Gateway {
  dataDir: string;
  configPath: string;
  clock: TestClock;
}

/** A gateway in this process with the state options the shared test helper does not expose. */
export async function startStateGateway(opts: { policies: string; upstreamUrl: string; dataDir?: string; configPath?: string; clock?: TestClock } & Partial<Pick<GatewayOptions, 'storeUrl' | 'auditFs' | 'auditMaxBytes' | 'watchConfig' | 'configPollMs' | 'sync' | 'log' | 'drainMs'>>): Promise<InProcGateway> {
  const dataDir = opts.dataDir ?? (await tempDir());
  const configPath = opts.configPath ?? join(dataDir, 'policies.yaml');
  if (!opts.configPath) await writeFile(configPath, opts.policies);
  const clock = opts.clock ?? new TestClock();
  const gw = await startGateway({
    configPath,
    dataDir,
    host: '127.0.0.1',
    port: 0,
    adminPort: 0,
    upstreamUrl: opts.upstreamUrl,
    now: clock.now,
    log: opts.log ?? pino({ level: 'silent' }),
    env: { ...process.env, PAMGATE_JWT_SECRET: TEST_SECRET },
    storeUrl: opts.storeUrl,
    auditFs: opts.auditFs,
    auditMaxBytes: opts.auditMaxBytes,
    watchConfig: opts.watchConfig ?? false,
    ...(opts.configPollMs !== undefined ? { configPollMs: opts.configPollMs } : {}),
    sync: opts.sync,
    drainMs: opts.drainMs,
  });
  return Object.assign(gw, { dataDir, configPath, clock });
}
