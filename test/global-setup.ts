import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** One temp root per test run; every helper's temp dir lives below it and goes with it. */
export default async function setup(): Promise<() => Promise<void>> {
  const root = await mkdtemp(join(tmpdir(), 'pamgate-run-'));
  process.env['PAMGATE_TEST_ROOT'] = root;
  return () => rm(root, { recursive: true, force: true });
}
