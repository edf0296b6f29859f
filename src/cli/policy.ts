/** Offline verbs on a policy file: check, explain, token. */
import { formatConfigError, loadPolicyFile } from '../config/load.js';
import { PolicySet, shadowedRoleTasks } from '../policy/compile.js';
import { CliError } from './errors.js';
import { demoEnv } from './demo-env.js';
import { explain } from './explain.js';

export async function check(file: string): Promise<number> {
  const result = await loadPolicyFile(file, demoEnv(), { lint: true });
  if (!result.ok) {
    for (const e of result.errors) process.stderr.write(formatConfigError(e) + '\n');
    return 1;
  }
  process.stdout.write(`${file}: ok, ${result.config.policies.length} policies\n`);
  for (const w of result.warnings) process.stdout.write(formatConfigError(w) + '\n');
  for (const w of shadowedRoleTasks(new PolicySet(result.config))) {
    process.stdout.write(`${file}: warning: policy ${w.policy} (role ${w.role}) does not cover ${w.task}: policy ${w.governedBy} governs it (task policies win over roles)\n`);
  }
  return 0;
}

export async function explainTask(configPath: string, o: { user?: string | undefined; task?: string | undefined; params?: string | undefined }): Promise<number> {
  if (!o.user || !o.task) throw new CliError('explain needs --user and --task (see pamgate help explain)');
  const result = await loadPolicyFile(configPath, demoEnv());
  if (!result.ok) throw new CliError(result.errors.map(formatConfigError).join('\n'));
  let params: Record<string, unknown> = {};
  if (o.params) {
    try {
      params = JSON.parse(o.params) as Record<string, unknown>;
    } catch {
      throw new CliError('--params must be a JSON object');
    }
    if (params === null || typeof params !== 'object' || Array.isArray(params)) throw new CliError('--params must be a JSON object');
  }
  process.stdout.write(explain(new PolicySet(result.config), o.user, o.task, params) + '\n');
  return 0;
}

export async function mintToken(configPath: string, o: { user?: string | undefined; amr?: string[] | undefined; hours?: string | undefined }): Promise<number> {
  if (!o.user) throw new CliError('token needs --user (see pamgate help token)');
  const hours = o.hours === undefined ? 8 : Number(o.hours);
  if (!Number.isFinite(hours) || hours <= 0 || hours > 24 * 365) throw new CliError(`--hours must be a number of hours between 0 and 8760, got "${o.hours}"`);
  const result = await loadPolicyFile(configPath, demoEnv());
  if (!result.ok) throw new CliError(result.errors.map(formatConfigError).join('\n'));
  const jwt = result.config.identity?.jwt;
  if (!jwt?.secret) throw new CliError('token only works with identity.jwt.secret (HS256) configured');
  const { SignJWT } = await import('jose');
  const now = Math.floor(Date.now() / 1000);
  let builder = new SignJWT({ [jwt.userClaim]: o.user, amr: o.amr ?? ['pwd'] })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(o.user)
    .setIssuedAt(now)
    .setExpirationTime(now + Math.round(hours * 3600));
  if (jwt.issuer) builder = builder.setIssuer(jwt.issuer);
  if (jwt.audience) builder = builder.setAudience(jwt.audience);
  process.stdout.write((await builder.sign(new TextEncoder().encode(jwt.secret))) + '\n');
  return 0;
}
