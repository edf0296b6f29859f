/** Secret used when the demo runs without PAMGATE_JWT_SECRET (demo upstream only). */
export const DEMO_JWT_SECRET = 'pamgate-demo-secret-do-not-use-in-production';

/** The environment, with the demo secret filled in when no upstream and no secret are set (as `serve` does). */
export function demoEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  if (!env['UPSTREAM_URL'] && env['PAMGATE_JWT_SECRET'] === undefined) env['PAMGATE_JWT_SECRET'] = DEMO_JWT_SECRET;
  return env;
}
