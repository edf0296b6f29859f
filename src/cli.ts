#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { SignJWT } from 'jose';
import { AuditKeyError, readAuditKey } from './audit/key.js';
import { verifyAuditFile } from './audit/verify.js';
import { readAuditEvents } from './audit/search.js';
import { callApi, callApiAllPages, CliError, print, type ClientOptions } from './cli/client.js';
import { explain } from './cli/explain.js';
import { formatConfigError, loadPolicyFile } from './config/load.js';
import { ConfigInvalidError, startGateway } from './gateway.js';
import { PolicySet, shadowedRoleTasks } from './policy/compile.js';

const USAGE = `usage: pamgate <command> [options]

  serve [--config FILE]                     run the gateway (env: PORT, HOST, ADMIN_PORT, UPSTREAM_URL, PAMGATE_DATA_DIR,
                                            PAMGATE_STORE, PAMGATE_AUDIT_MAX_BYTES, PAMGATE_AUDIT_KEY_FILE, PAMGATE_CONFIG_WATCH=off)
  check FILE                                validate a policy file (file:line:col: message per error)
  explain --config FILE --user U --task T [--params JSON]
  audit verify [FILE|DIR] [--key-file F]    check the hash chain (the live file or data dir: all segments); with the
                                            key file the gateway ran with (PAMGATE_AUDIT_KEY_FILE), its macs too
  audit search [FILE] [--type T] [--actor U] [--task T] [--request ID] [--since ISO] [--until ISO]
  request (--task T | --role R) --reason TEXT [--duration HOURS] [--ticket T] [--param K=V]...
  requests [--status S]
  approve ID [--comment TEXT]   deny ID [--comment TEXT]   cancel ID   revoke ID [--comment TEXT]
  token --user U [--amr mfa] [--hours H] [--config FILE]   mint a dev HS256 token from identity.jwt.secret

client commands take --server URL (default $PAMGATE_SERVER or http://127.0.0.1:8081), the token
from $PAMGATE_TOKEN, and --json for machine-readable output.`;

/** Secret used when the demo runs without PAMGATE_JWT_SECRET (demo upstream only). */
export const DEMO_JWT_SECRET = 'pamgate-demo-secret-do-not-use-in-production';

const OPTIONS = {
  config: { type: 'string' },
  user: { type: 'string' },
  task: { type: 'string' },
  role: { type: 'string' },
  params: { type: 'string' },
  reason: { type: 'string' },
  duration: { type: 'string' },
  ticket: { type: 'string' },
  param: { type: 'string', multiple: true },
  status: { type: 'string' },
  comment: { type: 'string' },
  server: { type: 'string' },
  json: { type: 'boolean' },
  type: { type: 'string' },
  actor: { type: 'string' },
  request: { type: 'string' },
  since: { type: 'string' },
  until: { type: 'string' },
  amr: { type: 'string', multiple: true },
  hours: { type: 'string' },
  'key-file': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

async function main(argv: string[]): Promise<number> {
  const { values: o, positionals } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  const [command, ...rest] = positionals;
  if (o.help || command === undefined) {
    process.stdout.write(USAGE + '\n');
    return command === undefined && !o.help ? 2 : 0;
  }
  const configPath = o.config ?? process.env['PAMGATE_CONFIG'] ?? './policies.yaml';
  const client: ClientOptions = { server: o.server ?? process.env['PAMGATE_SERVER'] ?? 'http://127.0.0.1:8081', token: process.env['PAMGATE_TOKEN'], json: o.json ?? false };

  switch (command) {
    case 'serve':
      return serve(configPath);
    case 'check': {
      const file = rest[0] ?? configPath;
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
    case 'explain': {
      if (!o.user || !o.task) throw new CliError('explain needs --user and --task');
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
    case 'audit':
      return audit(rest, o);
    case 'request': {
      const parameters = Object.fromEntries((o.param ?? []).map((kv) => {
        const eq = kv.indexOf('=');
        if (eq <= 0) throw new CliError(`--param takes K=V, got "${kv}"`);
        return [kv.slice(0, eq), kv.slice(eq + 1)];
      }));
      const body = {
        task: o.task,
        role: o.role,
        reason: o.reason,
        ticket: o.ticket,
        durationHours: o.duration !== undefined ? Number(o.duration) : undefined,
        parameters: o.param ? parameters : undefined,
      };
      print(client, await callApi(client, 'POST', '/api/requests', body));
      return 0;
    }
    case 'requests':
      // Pages of 200: each answer holds the gateway's event loop (and its proxy) only briefly.
      print(client, await callApiAllPages(client, `/api/requests?limit=200${o.status ? `&status=${encodeURIComponent(o.status)}` : ''}`));
      return 0;
    case 'approve':
    case 'deny':
    case 'cancel':
    case 'revoke': {
      const id = rest[0];
      if (!id) throw new CliError(`${command} needs a request id`);
      const body = command === 'cancel' ? undefined : o.comment !== undefined ? { comment: o.comment } : {};
      print(client, await callApi(client, 'POST', `/api/requests/${encodeURIComponent(id)}/${command}`, body));
      return 0;
    }
    case 'token':
      return mintToken(configPath, o);
    default:
      throw new CliError(`unknown command "${command}"\n${USAGE}`);
  }
}

async function serve(configPath: string): Promise<number> {
  const env = process.env;
  const upstreamUrl = env['UPSTREAM_URL'] || undefined;
  if (!upstreamUrl && env['PAMGATE_JWT_SECRET'] === undefined) env['PAMGATE_JWT_SECRET'] = DEMO_JWT_SECRET;
  let gateway;
  try {
    gateway = await startGateway({
      configPath,
      dataDir: resolve(env['PAMGATE_DATA_DIR'] ?? './data'),
      host: env['HOST'] ?? '127.0.0.1',
      port: Number(env['PORT'] ?? 8080),
      adminPort: Number(env['ADMIN_PORT'] ?? 8081),
      upstreamUrl,
      storeUrl: env['PAMGATE_STORE'],
      publicControlUrl: env['PAMGATE_PUBLIC_URL'],
      auditMaxBytes: positiveInt(env['PAMGATE_AUDIT_MAX_BYTES'], 'PAMGATE_AUDIT_MAX_BYTES'),
      auditKeyFile: env['PAMGATE_AUDIT_KEY_FILE'] || undefined,
      watchConfig: env['PAMGATE_CONFIG_WATCH'] !== 'off',
    });
  } catch (err) {
    if (err instanceof ConfigInvalidError) {
      for (const e of err.errors) process.stderr.write(formatConfigError(e) + '\n');
      process.stderr.write('pamgate: refusing to start with an invalid policy file\n');
      return 1;
    }
    if (err instanceof AuditKeyError) {
      process.stderr.write(`pamgate: refusing to start: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
  if (gateway.demo) {
    process.stderr.write(
      `\npamgate: no UPSTREAM_URL set — running the built-in DEMO upstream at ${gateway.demo.url}\n` +
        (env['PAMGATE_JWT_SECRET'] === DEMO_JWT_SECRET ? 'pamgate: tokens are checked against the public DEMO secret; mint one with `npx pamgate token --user alice@contoso.com`\n' : '') +
        `pamgate: proxy ${gateway.proxyUrl}  control ${gateway.controlUrl}\n\n`,
    );
  }
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    // close() bounds the drain itself; this is the backstop if flushing hangs (e.g. a dead disk).
    setTimeout(() => {
      process.stderr.write('pamgate: shutdown did not finish in time; exiting\n');
      process.exit(1);
    }, SHUTDOWN_DEADLINE_MS).unref();
    gateway.close().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`pamgate: shutdown failed: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.on('SIGHUP', () => {
    gateway.reload().catch((err: unknown) => process.stderr.write(`pamgate: reload failed: ${String(err)}\n`));
  });
  return new Promise<number>(() => undefined); // runs until a signal
}

const SHUTDOWN_DEADLINE_MS = 20_000;

function positiveInt(value: string | undefined, name: string): number | undefined {
  if (value === undefined || value === '') return undefined;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n <= 0) throw new CliError(`${name} must be a positive integer (bytes), got "${value}"`);
  return n;
}

async function audit(rest: string[], o: { 'key-file'?: string | undefined; type?: string | undefined; actor?: string | undefined; task?: string | undefined; request?: string | undefined; since?: string | undefined; until?: string | undefined }): Promise<number> {
  const [verb, fileArg] = rest;
  const file = fileArg ?? resolve(process.env['PAMGATE_DATA_DIR'] ?? './data', 'audit.jsonl');
  if (verb === 'verify') {
    const keyFile = o['key-file'];
    const key = keyFile === undefined ? undefined : await readAuditKey(keyFile, { what: '--key-file' }).catch(rethrowAsCliError);
    const result = await verifyAuditFile(file, { key });
    if (result.ok) {
      process.stdout.write(`ok ${result.events} events${result.segments ? ` in ${result.segments + 1} files` : ''}${result.keyed ? `, macs of ${result.keyed} lines and audit.head checked with the key` : ''}\n`);
      if (result.macsUnchecked) process.stderr.write(`note: keyed checks skipped: ${result.macsUnchecked} lines carry macs; give --key-file to check them\n`);
      if (result.inWal) process.stderr.write(`note: ${result.inWal} more acknowledged events are in audit.wal and not yet in the file (after a crash: the next start copies them in)\n`);
      return 0;
    }
    process.stderr.write(`${result.file ?? file}:${result.line}: ${result.reason}\n`);
    return 1;
  }
  if (verb === 'search') {
    const live = (await stat(file).catch(() => null))?.isDirectory() ? resolve(file, 'audit.jsonl') : file;
    for await (const e of readAuditEvents(live, { type: o.type, actor: o.actor, task: o.task, requestId: o.request, since: o.since, until: o.until })) {
      process.stdout.write(JSON.stringify(e) + '\n');
    }
    return 0;
  }
  throw new CliError('audit takes verify FILE or search [FILE] [filters]');
}

function rethrowAsCliError(err: unknown): never {
  throw err instanceof AuditKeyError ? new CliError(err.message) : err;
}

async function mintToken(configPath: string, o: { user?: string | undefined; amr?: string[] | undefined; hours?: string | undefined }): Promise<number> {
  if (!o.user) throw new CliError('token needs --user');
  const result = await loadPolicyFile(configPath, demoEnv());
  if (!result.ok) throw new CliError(result.errors.map(formatConfigError).join('\n'));
  const jwt = result.config.identity?.jwt;
  if (!jwt?.secret) throw new CliError('token only works with identity.jwt.secret (HS256) configured');
  let builder = new SignJWT({ [jwt.userClaim]: o.user, amr: o.amr ?? ['pwd'] })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(o.user)
    .setIssuedAt()
    .setExpirationTime(`${Number(o.hours ?? 8)}h`);
  if (jwt.issuer) builder = builder.setIssuer(jwt.issuer);
  if (jwt.audience) builder = builder.setAudience(jwt.audience);
  process.stdout.write((await builder.sign(new TextEncoder().encode(jwt.secret))) + '\n');
  return 0;
}

/** The environment, with the demo secret filled in when no upstream and no secret are set (mirrors `serve`). */
function demoEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  if (!env['UPSTREAM_URL'] && env['PAMGATE_JWT_SECRET'] === undefined) env['PAMGATE_JWT_SECRET'] = DEMO_JWT_SECRET;
  return env;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`pamgate: ${err instanceof CliError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') ? (err as Error).message : (err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
