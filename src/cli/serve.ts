/** `pamgate serve`: the gateway process, its logger, signals and start-up failures. */
import { resolve } from 'node:path';
import pino from 'pino';
import { parseMinFree } from '../audit/disk.js';
import { retentionFromEnv } from '../audit/retention.js';
import { formatConfigError } from '../config/load.js';
import { ConfigInvalidError, startGateway, StartupError, type Gateway } from '../gateway.js';
import { tlsFilesFromEnv } from '../runtime/tls.js';
import { DEMO_JWT_SECRET } from './demo-env.js';

const SHUTDOWN_DEADLINE_MS = 20_000;
const LEVELS = new Set(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']);

export async function serve(configPath: string): Promise<number> {
  const env = process.env;
  const level = (env['LOG_LEVEL'] || 'info').toLowerCase();
  if (!LEVELS.has(level)) return fail(`LOG_LEVEL "${env['LOG_LEVEL']}" is not a level: use trace, debug, info, warn, error, fatal or silent`);
  // Asynchronous stdout: a log line per gated decision must not cost a write(2) on the request path; flushed at exit.
  const destination = pino.destination({ dest: 1, sync: false, minLength: 0 });
  const log = pino({ level, base: { service: 'pamgate' } }, destination);
  const exit = (code: number): never => {
    try {
      destination.flushSync();
    } catch {
      /* stdout gone */
    }
    process.exit(code);
  };

  const upstreamUrl = env['UPSTREAM_URL'] || undefined;
  if (!upstreamUrl && env['PAMGATE_JWT_SECRET'] === undefined) env['PAMGATE_JWT_SECRET'] = DEMO_JWT_SECRET;
  let gateway: Gateway;
  try {
    gateway = await startGateway({
      configPath,
      dataDir: resolve(env['PAMGATE_DATA_DIR'] ?? './data'),
      host: env['HOST'] ?? '127.0.0.1',
      port: portOf(env['PORT'], 8080, 'PORT'),
      adminPort: portOf(env['ADMIN_PORT'], 8081, 'ADMIN_PORT'),
      upstreamUrl,
      storeUrl: env['PAMGATE_STORE'],
      publicControlUrl: env['PAMGATE_PUBLIC_URL'],
      auditMaxBytes: positiveInt(env['PAMGATE_AUDIT_MAX_BYTES'], 'PAMGATE_AUDIT_MAX_BYTES'),
      auditMinFree: env['PAMGATE_AUDIT_MIN_FREE'] ? setting(() => parseMinFree(env['PAMGATE_AUDIT_MIN_FREE']!)) : undefined,
      auditRetention: setting(() => retentionFromEnv(env)),
      auditKeyFile: env['PAMGATE_AUDIT_KEY_FILE'] || undefined,
      watchConfig: env['PAMGATE_CONFIG_WATCH'] !== 'off',
      tls: tlsFilesFromEnv(env),
      log,
    });
  } catch (err) {
    if (err instanceof ConfigInvalidError) {
      const missing = err.errors.length === 1 && /cannot read file: ENOENT/.test(err.errors[0]!.message);
      if (missing) return fail(`no policy file at ${configPath}: mount or create it there, or point PAMGATE_CONFIG (or --config) at one`, exit);
      for (const e of err.errors) process.stderr.write(formatConfigError(e) + '\n');
      return fail('refusing to start with an invalid policy file; fix the errors above (pamgate check FILE)', exit);
    }
    if (err instanceof StartupError) return fail(err.message, exit);
    return fail(`cannot start: ${oneLine(err)}`, exit);
  }
  if (gateway.demo) {
    process.stderr.write(
      `\npamgate: no UPSTREAM_URL set — running the built-in DEMO upstream at ${gateway.demo.url}\n` +
        (env['PAMGATE_JWT_SECRET'] === DEMO_JWT_SECRET ? 'pamgate: tokens are checked against the public DEMO secret; mint one with `npx pamgate token --user alice@contoso.com`\n' : '') +
        `pamgate: proxy ${gateway.proxyUrl}  control ${gateway.controlUrl}\n\n`,
    );
  }
  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutdown requested');
    // close() bounds the drain itself; this is the backstop if flushing hangs (e.g. a dead disk).
    setTimeout(() => {
      log.error({ deadlineMs: SHUTDOWN_DEADLINE_MS }, 'shutdown did not finish in time; exiting');
      process.stderr.write('pamgate: shutdown did not finish in time; exiting\n');
      exit(1);
    }, SHUTDOWN_DEADLINE_MS).unref();
    gateway.close().then(
      () => exit(0),
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.stderr.write(`pamgate: shutdown failed: ${oneLine(err)}\n`);
        exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.on('SIGHUP', () => {
    log.info('SIGHUP: re-reading the policy file and the TLS certificate');
    gateway.reload().catch((err: unknown) => log.error({ err }, 'policy reload failed'));
    void gateway.reloadTls();
  });
  return new Promise<number>(() => undefined); // runs until a signal
}

function fail(message: string, exit?: (code: number) => never): number {
  process.stderr.write(`pamgate: ${message}\n`);
  // Open handles (a store connection being retried) must not keep a failed start alive.
  if (exit) exit(1);
  return 1;
}

function oneLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0]!;
}

function portOf(value: string | undefined, fallback: number, name: string): number {
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!/^\d+$/.test(value) || n > 65535) throw new StartupError(`${name} must be a port number (0-65535), got "${value}"`);
  return n;
}

/** A setting read from the environment; a bad value stops the start with its one-line message. */
function setting<T>(read: () => T): T {
  try {
    return read();
  } catch (err) {
    throw new StartupError((err as Error).message);
  }
}

function positiveInt(value: string | undefined, name: string): number | undefined {
  if (value === undefined || value === '') return undefined;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n <= 0) throw new StartupError(`${name} must be a positive integer (bytes), got "${value}"`);
  return n;
}
