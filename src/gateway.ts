import { mkdir } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createAdaptorServer } from '@hono/node-server';
import pino, { type Logger } from 'pino';
import { readAuditKey } from './audit/key.js';
import { AuditLog, type AuditFs } from './audit/log.js';
import { readAuditEvents } from './audit/search.js';
import { formatConfigError, loadPolicyFile, type ConfigError } from './config/load.js';
import type { JwtConfig } from './config/schema.js';
import { createControlApp } from './control/app.js';
import { startDemoUpstream, type DemoUpstream } from './demo/upstream.js';
import { openRedisStore } from './grants/redis-store.js';
import { AccessService } from './grants/service.js';
import { openEmbeddedStore, type RequestStore } from './grants/store.js';
import { StoreSync } from './grants/sync.js';
import { TokenVerifier } from './identity/jwt.js';
import { createMetrics } from './metrics.js';
import { Mailer } from './notify/mailer.js';
import { PolicySet } from './policy/compile.js';
import { Forwarder } from './proxy/forward.js';
import { createProxyServer, listenerLimits } from './proxy/server.js';
import { lockDataDir } from './runtime/data-dir-lock.js';
import { watchPolicyFile, type PolicyWatch } from './runtime/policy-watch.js';

export interface GatewayOptions {
  configPath: string;
  dataDir: string;
  host: string;
  port: number;
  adminPort: number;
  /** Absent: a built-in demo upstream is started. */
  upstreamUrl?: string | undefined;
  /** Absent: the embedded store in dataDir. */
  storeUrl?: string | undefined;
  /** Public base URL of the control listener, for error bodies. Default http://host:adminPort. */
  publicControlUrl?: string | undefined;
  now?: () => number;
  log?: Logger;
  env?: NodeJS.ProcessEnv;
  /** Rotate audit.jsonl into a segment at this size (default 64 MiB). */
  auditMaxBytes?: number | undefined;
  /** HMAC key file of the keyed audit chain (outside dataDir); absent: the plain chain only. */
  auditKeyFile?: string | undefined;
  /** Audit file primitives (fault-injection tests). */
  auditFs?: AuditFs;
  /** Reload when the policy file changes (default true; SIGHUP works either way). */
  watchConfig?: boolean;
  /** With watchConfig: also read the policy file this often, whatever the watch reports (default 5 s; 0 never). */
  configPollMs?: number;
  /** Shared-store sync tuning: poll period, staleness bound, pub/sub on/off (tests). */
  sync?: { pollMs?: number; staleMs?: number; pubsub?: boolean };
  /** How long close() lets in-flight proxied requests finish (default 10 s). */
  drainMs?: number;
}

export class ConfigInvalidError extends Error {
  constructor(readonly errors: ConfigError[]) {
    super(`invalid policy file:\n${errors.map(formatConfigError).join('\n')}`);
  }
}

export interface Gateway {
  proxyUrl: string;
  controlUrl: string;
  upstreamUrl: string;
  demo: DemoUpstream | null;
  audit: AuditLog;
  service: AccessService;
  /** Re-reads the policy file; the old policies stay if the new file is invalid or the change cannot be audited. */
  reload(): Promise<{ ok: true } | { ok: false; errors: ConfigError[] }>;
  /** Whether gated tasks can be decided right now (shared state fresh); always true on the embedded store. */
  storeFresh(): boolean;
  /** Stops accepting, finishes in-flight requests (bounded), flushes the audit log. */
  close(): Promise<void>;
}

const SWEEP_INTERVAL_MS = 30_000;

export async function startGateway(opts: GatewayOptions): Promise<Gateway> {
  const now = opts.now ?? Date.now;
  const log = opts.log ?? pino({ base: { service: 'pamgate' } });
  const env = opts.env ?? process.env;

  const loaded = await loadPolicyFile(opts.configPath, env);
  if (!loaded.ok) throw new ConfigInvalidError(loaded.errors);
  let policies = new PolicySet(loaded.config);
  const firstVerifier = buildVerifier(opts.configPath, loaded.config.identity?.jwt, now);
  if (!firstVerifier.ok) throw new ConfigInvalidError([firstVerifier.error]);
  let verifier = firstVerifier.verifier;
  if (!loaded.config.identity) log.warn('policies.yaml has no identity section: no token can be verified, so every gated task answers 401');

  // One process per data dir: a second one would fork the audit chain and lose embedded state.
  await mkdir(opts.dataDir, { recursive: true, mode: 0o700 });
  const auditKey = opts.auditKeyFile !== undefined ? await readAuditKey(opts.auditKeyFile, { dataDir: opts.dataDir, what: 'PAMGATE_AUDIT_KEY_FILE' }) : undefined;
  const lock = await lockDataDir(opts.dataDir, log);
  let started = false;
  try {
    // Created before what it reports on: the gauges read audit and service only when scraped.
    const metrics = createMetrics(() => audit.stats(), () => service.activeGrantCount());
    const audit = await AuditLog.open({ dir: opts.dataDir, now, onDurable: metrics.onAuditDurable, ...(opts.auditMaxBytes ? { maxBytes: opts.auditMaxBytes } : {}), ...(opts.auditFs ? { fs: opts.auditFs } : {}), macKey: auditKey });
    if (audit.anchorMissing !== null) {
      log.error({ auditPath: audit.path, fileSeq: audit.anchorMissing.fileSeq }, 'audit.head was missing next to a non-empty audit file: lines cut from its end cannot be ruled out; recorded as audit.unanchored, which `pamgate audit verify` reports');
    }
    const store: RequestStore = await openStore(opts, log);
    const service = new AccessService(store, audit, () => policies, now);
    // Shared store: follow the other instances; grants count only while that view is fresh.
    const sync = store.changes ? new StoreSync(store.changes, service, { log, intervalMs: opts.sync?.pollMs, staleMs: opts.sync?.staleMs }) : null;
    if (sync) await sync.start();
    else await service.load();
    const storeFresh = sync ? sync.fresh : (): boolean => true;
    // Read once at start: a change to `notify` takes a restart.
    const mailer = loaded.config.notify ? new Mailer(loaded.config.notify, () => policies, audit, () => `${requestUrl.replace(/\/api\/requests$/, '')}/ui`, log) : null;
    if (mailer) service.onCommitted(mailer.onCommitted);

    const demo = opts.upstreamUrl ? null : await startDemoUpstream(0, '127.0.0.1');
    const upstreamUrl = opts.upstreamUrl ?? demo!.url;

    // auditRestored: lines the audit file had lost in a crash, copied back from audit.wal by open().
    await audit.append({ type: 'gateway.started', actor: null, upstream: upstreamUrl, pid: process.pid, store: sync ? 'redis' : 'embedded', auditKeyed: auditKey !== undefined, ...(audit.restoredLines > 0 ? { auditRestored: audit.restoredLines } : {}) });
    await audit.append({ type: 'policy.loaded', actor: null, file: opts.configPath, policies: policies.policies.size });

    // Known once the control listener is bound (its port may be ephemeral).
    let requestUrl = '';
    const forwarder = new Forwarder(upstreamUrl);
    const proxy = createProxyServer(
      {
        policies: () => policies,
        verifier: () => verifier,
        grantsOf: service.grantsOf,
        audit,
        grantsTrusted: storeFresh,
      ...upstreamBasePath(upstreamUrl),
        now,
        get requestUrl() {
          return requestUrl;
        },
        log,
        onDecision: metrics.onDecision,
      },
      forwarder,
      listenerLimits(env),
    );

    const app = createControlApp({
      service,
      verifier: () => verifier,
      policies: () => policies,
      metrics: metrics.registry,
      now,
      ready: async () => ({ store: storeFresh() && (await store.ping().catch(() => false)), audit: await audit.probe() }),
      countUses: async (from, to) => {
        const uses = new Map<string, number>();
        for await (const e of readAuditEvents(audit.path, { type: 'task.executed', since: new Date(from).toISOString(), until: new Date(to).toISOString() })) {
          const id = e['requestId'];
          if (typeof id === 'string') uses.set(id, (uses.get(id) ?? 0) + 1);
        }
        return uses;
      },
    });
    const control = createAdaptorServer({ fetch: app.fetch }) as Server;

    await listen(proxy, opts.port, opts.host);
    await listen(control, opts.adminPort, opts.host);

    const sweeper = setInterval(() => {
      service.sweep().catch((err: unknown) => log.error({ err }, 'expiry sweep failed'));
    }, SWEEP_INTERVAL_MS);
    sweeper.unref();

    // Reloads run one at a time; each reads the file afresh, so the last one wins.
    let reloading: Promise<unknown> = Promise.resolve();
    const reload = (): Promise<{ ok: true } | { ok: false; errors: ConfigError[] }> => {
      const next = reloading.then(() => reloadOnce());
      reloading = next.catch(() => undefined);
      return next;
    };
    const reloadOnce = async (): Promise<{ ok: true } | { ok: false; errors: ConfigError[] }> => {
      await watcher?.seen();
      const next = await loadPolicyFile(opts.configPath, env);
      if (!next.ok) {
        const errors = next.errors.map(formatConfigError);
        log.error({ file: opts.configPath, errors }, 'policy file rejected; keeping the previous policies');
        await audit.append({ type: 'policy.rejected', actor: null, file: opts.configPath, errors }).catch((err: unknown) => log.error({ err }, 'could not audit policy.rejected'));
        return { ok: false, errors: next.errors };
      }
      const nextPolicies = new PolicySet(next.config);
      // A verifier that cannot be built (e.g. an unreadable or invalid jwksFile) is a rejected file.
      const built = buildVerifier(opts.configPath, next.config.identity?.jwt, now);
      if (!built.ok) {
        const errors = [formatConfigError(built.error)];
        log.error({ file: opts.configPath, errors }, 'policy file rejected; keeping the previous policies');
        await audit.append({ type: 'policy.rejected', actor: null, file: opts.configPath, errors }).catch((err: unknown) => log.error({ err }, 'could not audit policy.rejected'));
        return { ok: false, errors: [built.error] };
      }
      const nextVerifier = built.verifier;
      try {
        await audit.append({ type: 'policy.loaded', actor: null, file: opts.configPath, policies: nextPolicies.policies.size });
      } catch (err) {
        // An unrecorded policy change is not allowed: keep the old policies.
        log.error({ err, file: opts.configPath }, 'policy change could not be audited; keeping the previous policies');
        return { ok: false, errors: [{ file: opts.configPath, line: 0, col: 0, message: `audit log unavailable, policies not changed: ${(err as Error).message}` }] };
      }
      // Swapped together in one synchronous step: no request sees new policies with the old verifier.
      policies = nextPolicies;
      verifier = nextVerifier;
      log.info({ policies: policies.policies.size }, 'policies reloaded');
      return { ok: true };
    };
    const watcher: PolicyWatch | null = opts.watchConfig === false ? null : await watchPolicyFile(opts.configPath, reload, log, opts.configPollMs !== undefined ? { pollMs: opts.configPollMs } : {});

    const proxyUrl = `http://${opts.host}:${(proxy.address() as AddressInfo).port}`;
    const controlUrl = `http://${opts.host}:${(control.address() as AddressInfo).port}`;
    requestUrl = `${opts.publicControlUrl ?? controlUrl}/api/requests`;
    log.info({ proxyUrl, controlUrl, upstreamUrl, demo: demo !== null, policies: policies.policies.size }, 'pamgate started');

    started = true;
    return {
      proxyUrl,
      controlUrl,
      upstreamUrl,
      demo,
      audit,
      service,
      reload,
      storeFresh,
      async close() {
        clearInterval(sweeper);
        watcher?.close();
        await Promise.all([drain(proxy, opts.drainMs ?? 10_000), drain(control, 5_000)]);
        await reloading;
        await sync?.stop();
        forwarder.close();
        await demo?.close();
        await mailer?.stop();
        await audit.close();
        await store.close();
        await lock.release();
      },
    };
  } finally {
    if (!started) await lock.release();
  }
}

/** A token verifier for `jwt`, or why it cannot be built (jwksFile unreadable or not a JWKS), as a config error. */
function buildVerifier(file: string, jwt: JwtConfig | undefined, now: () => number): { ok: true; verifier: TokenVerifier } | { ok: false; error: ConfigError } {
  try {
    return { ok: true, verifier: new TokenVerifier(jwt, now) };
  } catch (err) {
    const what = jwt?.jwksFile !== undefined ? `identity.jwt.jwksFile ${jwt.jwksFile}` : 'identity.jwt';
    return { ok: false, error: { file, line: 0, col: 0, message: `${what}: cannot build the token verifier: ${(err as Error).message}` } };
  }
}

async function openStore(opts: GatewayOptions, log: Logger): Promise<RequestStore> {
  const url = opts.storeUrl;
  if (url === undefined || url === '') return openEmbeddedStore(opts.dataDir);
  if (/^rediss?:\/\//.test(url)) return openRedisStore(url, { log, ...(opts.sync?.pubsub === false ? { pubsub: false } : {}) });
  throw new Error(`PAMGATE_STORE=${url}: expected redis://host:port (or unset for the embedded store)`);
}

function upstreamBasePath(upstreamUrl: string): { upstreamBasePath?: string } {
  const path = new URL(upstreamUrl).pathname.replace(/\/+$/, '');
  return path === '' ? {} : { upstreamBasePath: path };
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** Stops accepting, lets in-flight requests finish, then cuts what is left after `timeoutMs`. */
function drain(server: Server, timeoutMs: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => server.closeAllConnections(), timeoutMs);
    timer.unref();
    // A keep-alive connection goes idle when its last response is sent; close it then rather than
    // waiting for the client's keep-alive timeout.
    const sweep = setInterval(() => server.closeIdleConnections(), 25);
    sweep.unref();
    server.close(() => {
      clearTimeout(timer);
      clearInterval(sweep);
      resolve();
    });
    server.closeIdleConnections();
  });
}
