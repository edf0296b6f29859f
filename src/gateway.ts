import { createHash } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { connect, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createAdaptorServer } from '@hono/node-server';
import pino, { type Logger } from 'pino';
import { boundedAudit } from './audit/bound.js';
import { DiskWatch, type MinFree, type StatFs } from './audit/disk.js';
import { readAuditKey } from './audit/key.js';
import { AuditLog, type AuditFs } from './audit/log.js';
import type { RetentionPolicy } from './audit/retention.js';
import { AuditUpkeep } from './audit/upkeep.js';
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
import { addAuditDiskMetrics, createMetrics } from './metrics.js';
import { Mailer } from './notify/mailer.js';
import { PolicySet } from './policy/compile.js';
import { Forwarder } from './proxy/forward.js';
import { RefusalLimiter } from './proxy/refusal-limiter.js';
import { createProxyServer, listenerLimits } from './proxy/server.js';
import { lockDataDir } from './runtime/data-dir-lock.js';
import { watchPolicyFile, type PolicyWatch } from './runtime/policy-watch.js';
import { StartupError } from './runtime/startup-error.js';
import { readTls, type TlsFiles } from './runtime/tls.js';

export { StartupError } from './runtime/startup-error.js';

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
  /** Free-space watermark of the audit disk (default: 1 GiB, or 5 % of a smaller disk). */
  auditMinFree?: MinFree | undefined;
  /** How often the audit disk's free space is read (default 10 s). */
  auditDiskCheckMs?: number;
  /** Reads the audit disk's free space (default fs.statfs). */
  auditStatFs?: StatFs;
  /** Retention of rotated audit segments; absent or null: kept forever. */
  auditRetention?: RetentionPolicy | null | undefined;
  /** Reload when the policy file changes (default true; SIGHUP works either way). */
  watchConfig?: boolean;
  /** With watchConfig: also read the policy file this often, whatever the watch reports (default 5 s; 0 never). */
  configPollMs?: number;
  /** Shared-store sync tuning: poll period, staleness bound, pub/sub on/off (tests). */
  sync?: { pollMs?: number; staleMs?: number; pubsub?: boolean };
  /** How long close() lets in-flight proxied requests finish (default 10 s). */
  drainMs?: number;
  /** PEM certificate and key: both listeners speak HTTPS, and reloadTls() re-reads the files. */
  tls?: TlsFiles | null | undefined;
  /** How long the start-up probe waits for a TCP connection to the upstream (default 2 s). */
  upstreamProbeMs?: number;
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
  /** Re-reads the TLS certificate and key (SIGHUP); an unreadable or mismatched pair keeps the old one. */
  reloadTls(): Promise<{ ok: true } | { ok: false; error: string }>;
  /** Stops accepting, finishes in-flight requests (bounded), flushes the audit log. */
  close(): Promise<void>;
}

const SWEEP_INTERVAL_MS = 30_000;

export async function startGateway(opts: GatewayOptions): Promise<Gateway> {
  const now = opts.now ?? Date.now;
  const log = opts.log ?? pino({ base: { service: 'pamgate' } });
  const env = opts.env ?? process.env;

  // Everything that can be checked before a file is opened or a port bound, is.
  if (opts.upstreamUrl !== undefined) checkUpstreamUrl(opts.upstreamUrl);
  checkPort(opts.port, 'PORT');
  checkPort(opts.adminPort, 'ADMIN_PORT');
  let tls = opts.tls ? await readTls(opts.tls) : null;

  const loaded = await loadPolicyFile(opts.configPath, env);
  if (!loaded.ok) throw new ConfigInvalidError(loaded.errors);
  let policies = new PolicySet(loaded.config);
  const firstVerifier = buildVerifier(opts.configPath, loaded.config.identity?.jwt, now);
  if (!firstVerifier.ok) throw new ConfigInvalidError([firstVerifier.error]);
  let verifier = firstVerifier.verifier;
  if (!loaded.config.identity) log.warn('policies.yaml has no identity section: no token can be verified, so every gated task answers 401');

  // One process per data dir: a second one would fork the audit chain and lose embedded state.
  await mkdir(opts.dataDir, { recursive: true, mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
    throw dataDirError(err, opts.dataDir);
  });
  const auditKey = opts.auditKeyFile !== undefined ? await readAuditKey(opts.auditKeyFile, { dataDir: opts.dataDir, what: 'PAMGATE_AUDIT_KEY_FILE' }).catch((err: Error) => {
    throw new StartupError(err.message);
  }) : undefined;
  const lock = await lockDataDir(opts.dataDir, log);
  let started = false;
  // Undone in reverse order when the start cannot complete: nothing stays open or listening.
  const undo: Array<() => Promise<unknown> | unknown> = [];
  try {
    // Created before what it reports on: the gauges read audit and service only when scraped.
    const metrics = createMetrics(() => audit.stats(), () => service.activeGrantCount());
    let upkeep: AuditUpkeep | null = null;
    const audit = await AuditLog.open({ dir: opts.dataDir, now, onDurable: metrics.onAuditDurable, onRotated: () => upkeep?.afterRotation(), ...(opts.auditMaxBytes ? { maxBytes: opts.auditMaxBytes } : {}), ...(opts.auditFs ? { fs: opts.auditFs } : {}), macKey: auditKey }).catch((err: NodeJS.ErrnoException) => {
      throw dataDirError(err, opts.dataDir);
    });
    undo.push(() => audit.close());
    if (audit.anchorMissing !== null) {
      log.error({ auditPath: audit.path, fileSeq: audit.anchorMissing.fileSeq }, 'audit.head was missing next to a non-empty audit file: lines cut from its end cannot be ruled out; recorded as audit.unanchored, which `pamgate audit verify` reports');
    }
    // What clients can get into an event is bounded on its way to the writer (audit/bound.ts).
    const recorder = boundedAudit(audit);
    const disk = new DiskWatch({ dir: opts.dataDir, minFree: opts.auditMinFree, intervalMs: opts.auditDiskCheckMs, statfs: opts.auditStatFs, log });
    addAuditDiskMetrics(metrics.registry, () => disk.state);
    upkeep = new AuditUpkeep({ dir: opts.dataDir, append: (e) => audit.append(e), disk, retention: opts.auditRetention ?? null, now, log });
    undo.push(() => upkeep?.stop());
    await upkeep.start();
    const store: RequestStore = await openStore(opts, log);
    undo.push(() => store.close());
    const service = new AccessService(store, recorder, () => policies, now);
    // Shared store: follow the other instances; grants count only while that view is fresh.
    const sync = store.changes ? new StoreSync(store.changes, service, { log, intervalMs: opts.sync?.pollMs, staleMs: opts.sync?.staleMs }) : null;
    if (sync) {
      await sync.start();
      undo.push(() => sync.stop());
    } else await service.load();
    const storeFresh = sync ? sync.fresh : (): boolean => true;
    // Read once at start: a change to `notify` takes a restart.
    const mailer = loaded.config.notify ? new Mailer(loaded.config.notify, () => policies, recorder, () => `${requestUrl.replace(/\/api\/requests$/, '')}/ui`, log) : null;
    if (mailer) {
      service.onCommitted(mailer.onCommitted);
      undo.push(() => mailer.stop());
    }

    const demo = opts.upstreamUrl ? null : await startDemoUpstream(0, '127.0.0.1');
    if (demo) undo.push(() => demo.close());
    const upstreamUrl = opts.upstreamUrl ?? demo!.url;

    // auditRestored: lines the audit file had lost in a crash, copied back from audit.wal by open().
    await audit.append({ type: 'gateway.started', actor: null, upstream: upstreamUrl, pid: process.pid, store: sync ? 'redis' : 'embedded', auditKeyed: auditKey !== undefined, ...(audit.restoredLines > 0 ? { auditRestored: audit.restoredLines } : {}) });
    await audit.append({ type: 'policy.loaded', actor: null, file: opts.configPath, policies: policies.policies.size });

    // Known once the control listener is bound (its port may be ephemeral).
    let requestUrl = '';
    let upstreamDown = false;
    const forwarder = new Forwarder(upstreamUrl, {
      onFailure(failure) {
        upstreamDown = true;
        metrics.onUpstreamFailure();
        log.warn({ upstream: upstreamUrl, rid: failure.requestId, method: failure.method, path: failure.path, reachedUpstream: failure.reachedUpstream, error: failure.message }, 'upstream request failed (502)');
      },
      onAnswer() {
        if (!upstreamDown) return;
        upstreamDown = false;
        metrics.onUpstreamAnswer();
        log.info({ upstream: upstreamUrl }, 'upstream answering again');
      },
    });
    undo.push(() => forwarder.close());
    const proxy = createProxyServer(
      {
        policies: () => policies,
        verifier: () => verifier,
        grantsOf: service.grantsOf,
        audit: recorder,
        grantsTrusted: storeFresh,
        refusals: new RefusalLimiter(() => ({ burst: policies.settings.refusalBurst, perSecond: policies.settings.refusalsPerSecond }), now),
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
      tls ?? undefined,
    );

    const app = createControlApp({
      service,
      verifier: () => verifier,
      policies: () => policies,
      metrics: metrics.registry,
      now,
      ready: async () => ({ store: storeFresh() && (await store.ping().catch(() => false)), audit: await audit.probe(), auditDisk: disk.state?.low !== true }),
      readyReasons: (): Record<string, string> => {
        const reason = disk.reason();
        return reason === null ? {} : { auditDisk: reason };
      },
      countUses: async (from, to) => {
        const uses = new Map<string, number>();
        for await (const e of readAuditEvents(audit.path, { type: 'task.executed', since: new Date(from).toISOString(), until: new Date(to).toISOString() })) {
          const id = e['requestId'];
          if (typeof id === 'string') uses.set(id, (uses.get(id) ?? 0) + 1);
        }
        return uses;
      },
    });
    const control = (tls ? createAdaptorServer({ fetch: app.fetch, createServer: createHttpsServer, serverOptions: { cert: tls.cert, key: tls.key } }) : createAdaptorServer({ fetch: app.fetch })) as Server;

    await listen(proxy, opts.port, opts.host);
    undo.push(() => closeNow(proxy));
    await listen(control, opts.adminPort, opts.host);
    undo.push(() => closeNow(control));

    const sweeper = setInterval(() => {
      service
        .sweep()
        .catch((err: unknown) => log.error({ err }, 'expiry sweep failed'))
        .then(() => service.prune())
        .catch((err: unknown) => log.error({ err }, 'pruning closed requests failed'));
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

    const scheme = tls ? 'https' : 'http';
    const urlHost = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
    const proxyUrl = `${scheme}://${urlHost}:${(proxy.address() as AddressInfo).port}`;
    const controlUrl = `${scheme}://${urlHost}:${(control.address() as AddressInfo).port}`;
    requestUrl = `${opts.publicControlUrl ?? controlUrl}/api/requests`;

    const reachable = await probeUpstream(upstreamUrl, opts.upstreamProbeMs ?? 2_000);
    if (reachable !== true) {
      upstreamDown = true;
      metrics.onUpstreamFailure();
      log.warn({ upstream: upstreamUrl, error: reachable }, 'upstream not reachable at start; starting anyway (gated and ungated calls answer 502 until it is)');
    }
    log.info(
      {
        proxyUrl,
        controlUrl,
        tls: tls ? { cert: opts.tls!.certFile, key: opts.tls!.keyFile } : false,
        upstreams: [{ url: upstreamUrl, demo: demo !== null, reachable: reachable === true }],
        policyFile: opts.configPath,
        policies: policies.policies.size,
        policyHash: await fileHash(opts.configPath),
        mode: policies.settings.enabled ? policies.settings.mode : 'disabled',
        trustedProxies: policies.settings.trustedProxies,
        store: sync ? 'redis' : 'embedded',
        audit: join(opts.dataDir, 'audit.jsonl'),
        logLevel: log.level,
      },
      'pamgate started',
    );

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
      async reloadTls() {
        if (!opts.tls) return { ok: false, error: 'TLS is not configured (PAMGATE_TLS_CERT, PAMGATE_TLS_KEY)' };
        try {
          const next = await readTls(opts.tls);
          (proxy as unknown as HttpsServer).setSecureContext({ cert: next.cert, key: next.key });
          (control as unknown as HttpsServer).setSecureContext({ cert: next.cert, key: next.key });
          tls = next;
          log.info({ cert: opts.tls.certFile, key: opts.tls.keyFile }, 'TLS certificate reloaded');
          return { ok: true };
        } catch (err) {
          log.error({ cert: opts.tls.certFile, key: opts.tls.keyFile, error: (err as Error).message }, 'TLS certificate not reloaded; keeping the previous one');
          return { ok: false, error: (err as Error).message };
        }
      },
      async close() {
        log.info('pamgate stopping: no new connections, finishing in-flight requests');
        clearInterval(sweeper);
        watcher?.close();
        await Promise.all([drain(proxy, opts.drainMs ?? 10_000), drain(control, 5_000)]);
        await reloading;
        await sync?.stop();
        forwarder.close();
        await demo?.close();
        await mailer?.stop();
        await upkeep?.stop();
        await audit.close();
        await store.close();
        await lock.release();
        log.info({ auditEvents: audit.stats().events }, 'pamgate stopped');
      },
    };
  } catch (err) {
    for (const step of undo.reverse()) await Promise.resolve().then(step).catch(() => undefined);
    throw err;
  } finally {
    if (!started) await lock.release();
  }
}

/** A malformed or non-http(s) UPSTREAM_URL is refused before anything is opened. */
function checkUpstreamUrl(url: string): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new StartupError(`UPSTREAM_URL "${url}" is not a URL; set it to the admin API's base URL, e.g. https://outlook.office365.com`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new StartupError(`UPSTREAM_URL "${url}" must be an http:// or https:// URL`);
  if (parsed.hostname === '') throw new StartupError(`UPSTREAM_URL "${url}" names no host`);
}

/** A data dir that cannot be created or written: named, with the fix; other errors pass unchanged. */
function dataDirError(err: NodeJS.ErrnoException, dir: string): Error {
  const reasons: Record<string, string> = { EACCES: 'permission denied', EPERM: 'permission denied', EROFS: 'read-only file system', ENOSPC: 'no space left on device', ENOTDIR: 'a path component is not a directory' };
  const reason = err.code !== undefined ? reasons[err.code] : undefined;
  if (reason === undefined) return err;
  return new StartupError(`cannot write the data dir ${dir}: ${reason}; point PAMGATE_DATA_DIR at a writable directory owned by this user (in the container image: a volume at /data)`);
}

function checkPort(port: number, variable: string): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new StartupError(`${variable} must be a port number (0-65535), got "${port}"`);
}

/** Lowercase hex sha256 of the policy file's bytes, as loaded (identifies the policy version in logs). */
async function fileHash(file: string): Promise<string | null> {
  return readFile(file).then((bytes) => createHash('sha256').update(bytes).digest('hex'), () => null);
}

/** true when a TCP connection to the upstream opens within `timeoutMs`, else why not. */
function probeUpstream(url: string, timeoutMs: number): Promise<true | string> {
  const target = new URL(url);
  const port = Number(target.port || (target.protocol === 'https:' ? 443 : 80));
  const host = target.hostname.replace(/^\[|\]$/g, '');
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (result: true | string): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => done(`no connection within ${timeoutMs} ms`), timeoutMs);
    socket.once('connect', () => done(true));
    socket.once('error', (err) => done(err.message));
  });
}

/** Closes a listener that never served (a start that cannot complete). */
function closeNow(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
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
  const path = new URL(upstreamUrl).pathname.replace(/(?<!\/)\/+$/, '');
  return path === '' ? {} : { upstreamBasePath: path };
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const fail = (err: NodeJS.ErrnoException): void => {
      const reason = err.code === 'EADDRINUSE' ? 'address in use' : err.code === 'EACCES' ? 'permission denied' : err.code === 'EADDRNOTAVAIL' ? 'address not available on this machine' : err.message;
      const fix = err.code === 'EADDRINUSE' ? 'stop the other process or choose another port' : err.code === 'EACCES' ? 'use a port above 1023 or grant the capability to bind it' : 'check HOST';
      reject(new StartupError(`cannot listen on ${host.includes(':') ? `[${host}]` : host}:${port}: ${reason}; ${fix} (PORT, ADMIN_PORT, HOST)`));
    };
    server.once('error', fail);
    server.listen(port, host, () => {
      server.off('error', fail);
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
