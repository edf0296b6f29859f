import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { startGateway, type Gateway, type GatewayOptions } from '../../src/gateway.js';
import { TEST_SECRET } from './tokens.js';

/** A clock tests move by hand: no sleeping for expiry. */
export class TestClock {
  constructor(public ms = Date.now()) {}
  readonly now = (): number => this.ms;
  advanceHours(h: number): void {
    this.ms += h * 3_600_000;
  }
}

/** A fresh temp dir under this run's root (removed when the run ends). */
export async function tempDir(prefix = 'pamgate-test-'): Promise<string> {
  return mkdtemp(join(process.env['PAMGATE_TEST_ROOT'] ?? tmpdir(), prefix));
}

export interface TestGateway extends Gateway {
  dataDir: string;
  configPath: string;
  clock: TestClock;
}

export type TestGatewayOptions = { policies: string; upstreamUrl: string; dataDir?: string; configPath?: string; clock?: TestClock } & Partial<
  Omit<GatewayOptions, 'configPath' | 'dataDir' | 'upstreamUrl' | 'now'>
>;

/**
 * A gateway in this process on ephemeral loopback ports, in front of `upstreamUrl`, with a
 * hand-moved clock. `policies` is written to `configPath` unless a config path is given.
 */
export async function startTestGateway(opts: TestGatewayOptions): Promise<TestGateway> {
  const { policies, clock = new TestClock(), configPath: givenConfig, dataDir: givenDir, ...rest } = opts;
  const dataDir = givenDir ?? (await tempDir());
  const configPath = givenConfig ?? join(dataDir, 'policies.yaml');
  if (givenConfig === undefined) await writeFile(configPath, policies);
  const gw = await startGateway({
    host: '127.0.0.1',
    port: 0,
    adminPort: 0,
    log: pino({ level: 'silent' }),
    env: { ...process.env, PAMGATE_JWT_SECRET: TEST_SECRET },
    ...rest,
    configPath,
    dataDir,
    now: clock.now,
  });
  return Object.assign(gw, { dataDir, configPath, clock });
}
