import { afterAll, beforeAll } from 'vitest';
import { startUpstreamProcess, type CountingUpstream } from '../../helpers/upstream.js';
import { killAllGateways } from './process.js';

/**
 * The per-file setup of the process-level state tests: one counting upstream for the file,
 * and every gateway process it spawned killed at the end. Temp dirs live under the run's
 * root (test/global-setup.ts) and go with it.
 */
export function useUpstream(): () => CountingUpstream {
  let upstream: CountingUpstream | undefined;
  beforeAll(async () => {
    upstream = await startUpstreamProcess();
  });
  afterAll(async () => {
    await killAllGateways();
    await upstream?.stop();
  });
  return () => upstream!;
}
