import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createAdaptorServer } from '@hono/node-server';
import pino, { type Logger } from 'pino';
import { AuditLog } from './audit/log.js';
import { readAuditEvents } from './audit/search.js';
import { formatConfigError, loadPolicyFile, type ConfigError } from './config/load.js';
import { createControlApp } from './control/app.js';
import { startDemoUpstream, type DemoUpstream } from './demo/upstream.js';
import { AccessService } from './grants/service.js';
import { openEmbeddedStore, type RequestStore } from './grants/store.js';
import { TokenVerifier } from './identity/jwt.js';
import { createMetrics } from './metrics.js';
import { PolicySet } from './policy/compile.js';
import { Forwarder } from './proxy/forward.js';
import { createProxyServer } from './proxy/server.js';

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
  /** Re-reads the policy file; the old policies stay if the new file is invalid. */
  reload(): Promise<{ ok: true } | { ok: false; errors: ConfigError[] }>;
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
  let verifier = new TokenVerifier(loaded.config.identity?.jwt, now);
  if (!loaded.config.identity) log.warn('policies.yaml has no identity section: no token can be verified, so every gated task answers 401');

  const audit = await AuditLog.open({ dir: opts.dataDir, now });
  const store: RequestStore = await openStore(opts);
  const service = new AccessService(store, audit, () => policies, now);
  await service.load();

  const demo = opts.upstreamUrl ? null : await startDemoUpstream(0, '127.0.0.1');
  const upstreamUrl = opts.upstreamUrl ?? demo!.url;

  await audit.append({ type: 'gateway.started', actor: null, upstream: upstreamUrl, pid: process.pid });
  await audit.append({ type: 'policy.loaded', actor: null, file: opts.configPath, policies: policies.policies.size });

  const metrics = createMetrics(() => audit.stats(), () => service.activeGrantCount());
  // Known once the control listener is bound (its port may be ephemeral).
  let requestUrl = '';
  const forwarder = new Forwarder(upstreamUrl);
  const proxy = createProxyServer(
    {
      policies: () => policies,
      verifier: () => verifier,
      grantsOf: service.grantsOf,
      audit,
      now,
      get requestUrl() {
        return requestUrl;
      },
      log,
      onDecision: metrics.onDecision,
    },
    forwarder,
  );

  const app = createControlApp({
    service,
    verifier: () => verifier,
    policies: () => policies,
    metrics: metrics.registry,
    now,
    ready: async () => ({ store: await store.ping().catch(() => false), audit: await audit.probe() }),
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

  const proxyUrl = `http://${opts.host}:${(proxy.address() as AddressInfo).port}`;
  const controlUrl = `http://${opts.host}:${(control.address() as AddressInfo).port}`;
  requestUrl = `${opts.publicControlUrl ?? controlUrl}/api/requests`;
  log.info({ proxyUrl, controlUrl, upstreamUrl, demo: demo !== null, policies: policies.policies.size }, 'pamgate started');

  return {
    proxyUrl,
    controlUrl,
    upstreamUrl,
    demo,
    audit,
    service,
    async reload() {
      const next = await loadPolicyFile(opts.configPath, env);
      if (!next.ok) {
        log.error({ errors: next.errors.map(formatConfigError) }, 'policy file rejected; keeping the previous policies');
        await audit.append({ type: 'policy.rejected', actor: null, file: opts.configPath, errors: next.errors.map(formatConfigError) }).catch(() => undefined);
        return { ok: false, errors: next.errors };
      }
      await audit.append({ type: 'policy.loaded', actor: null, file: opts.configPath, policies: next.config.policies.length });
      policies = new PolicySet(next.config);
      verifier = new TokenVerifier(next.config.identity?.jwt, now);
      log.info({ policies: policies.policies.size }, 'policies reloaded');
      return { ok: true };
    },
    async close() {
      clearInterval(sweeper);
      await Promise.all([drain(proxy, 10_000), drain(control, 5_000)]);
      forwarder.close();
      await demo?.close();
      await audit.close();
      await store.close();
    },
  };
}

async function openStore(opts: GatewayOptions): Promise<RequestStore> {
  if (opts.storeUrl === undefined || opts.storeUrl === '') return openEmbeddedStore(opts.dataDir);
  throw new Error(`PAMGATE_STORE=${opts.storeUrl}: only the embedded store is supported in this build`);
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
    server.close(() => {
      clearTimeout(timer);
      resolve();
    });
    server.closeIdleConnections();
  });
}
