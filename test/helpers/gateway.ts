import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { startGateway, type Gateway } from '../../src/gateway.js';
import { TEST_SECRET } from './tokens.js';

/** A clock tests move by hand: no sleeping for expiry. */
export class TestClock {
  constructor(public ms = Date.now()) {}
  readonly now = (): number => this.ms;
  advanceHours(h: number): void {
    this.ms += h * 3_600_000;
  }
}

export async function tempDir(prefix = 'pamgate-test-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

export interface TestGateway extends Gateway {
  dataDir: string;
  configPath: string;
  clock: TestClock;
}

/** A gateway in this process on ephemeral loopback ports, in front of `upstreamUrl`. */
export async function startTestGateway(opts: { policies: string; upstreamUrl: string; dataDir?: string; clock?: TestClock }): Promise<TestGateway> {
  const dataDir = opts.dataDir ?? (await tempDir());
  const configPath = join(dataDir, 'policies.yaml');
  await writeFile(configPath, opts.policies);
  const clock = opts.clock ?? new TestClock();
  const gw = await startGateway({
    configPath,
    dataDir,
    host: '127.0.0.1',
    port: 0,
    adminPort: 0,
    upstreamUrl: opts.upstreamUrl,
    now: clock.now,
    log: pino({ level: 'silent' }),
    env: { ...process.env, PAMGATE_JWT_SECRET: TEST_SECRET },
  });
  return Object.assign(gw, { dataDir, configPath, clock });
}
