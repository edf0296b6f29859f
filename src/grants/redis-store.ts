import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import KeyvRedis, { Keyv, createClient } from '@keyv/redis';
import type { Logger } from 'pino';
import type { AccessRequest } from './model.js';
import type { RateLimiter } from './rate-limit.js';
import { COMMIT, RATE_TAKE, RELEASE, REMOVE_ENDED, SINCE } from './redis-scripts.js';
import type { ChangeFeed, FeedPosition, LockedPut, RequestStore } from './store.js';

export interface RedisStoreOptions {
  log: Logger;
  /** A lock older than this is free again; the fenced commit refuses a holder that outlived it. */
  lockTtlMs?: number;
  /** How long to wait for a busy lock before answering 503. */
  lockWaitMs?: number;
  /** No pub/sub subscription (tests of the polling bound). */
  pubsub?: boolean;
}

/** Thrown when the shared store cannot take a change right now; the service answers 503. */
export class StoreUnavailableError extends Error {}

const NS = 'pamgate';
const REQ = 'req:';
const K = {
  changes: `${NS}:changes`,
  version: `${NS}:version`,
  epoch: `${NS}:epoch`,
  log: `${NS}:log`,
  lock: (id: string): string => `${NS}:lock:${id}`,
  rate: (user: string): string => `${NS}:rate:${user}`,
  channel: `${NS}:changed`,
};
const COMMIT_TIMEOUT_MS = 5_000;
const PING_TIMEOUT_MS = 500;
const CONNECT_WAIT_MS = 2_000;

/**
 * Requests live in Redis as keyv entries (`pamgate:req:<id>`, read with keyv); what keyv cannot
 * do is done with the same client: a per-request lock (SET NX PX + token, released by Lua), an
 * atomic, lock-fenced commit script that also bumps a change set and publishes the id, and a
 * subscription for those announcements. Commands fail fast while disconnected (no offline
 * queue), so the control API answers 503 instead of hanging.
 */
export async function openRedisStore(url: string, opts: RedisStoreOptions): Promise<RequestStore & { changes: ChangeFeed }> {
  // The TTL is shorter than the wait, so a lock left by a crashed instance expires while the next
  // caller waits for it; a live holder that outlives it is stopped by the fenced commit.
  const lockTtlMs = opts.lockTtlMs ?? 2_000;
  const lockWaitMs = opts.lockWaitMs ?? 3_000;
  const log = opts.log.child({ component: 'redis-store' });
  const socket = { connectTimeout: 1_000, reconnectStrategy: (retries: number) => Math.min(50 * 2 ** retries, 500) };
  const client = createClient({ url, disableOfflineQueue: true, socket });
  // The subscriber keeps its offline queue: SUBSCRIBE waits for the connection and is renewed on reconnect.
  const subscriber = createClient({ url, socket });
  watchConnection(client, log, 'commands');
  watchConnection(subscriber, log, 'pub/sub');
  // connect() retries on its own and resolves once connected; commands fail fast meanwhile.
  // Give it a moment so a healthy Redis is ready for the first sync, but never block start-up on it.
  const connected = client.connect().then(() => true, () => false);
  if (!(await Promise.race([connected, sleep(CONNECT_WAIT_MS, false)]))) log.error({ url: redact(url) }, 'redis not reachable at start-up; starting not ready (gated tasks answer 503)');

  const adapter = new KeyvRedis<AccessRequest>(client, { namespace: NS, keyPrefixSeparator: ':', throwOnErrors: true, throwOnConnectError: true });
  const keyv = new Keyv<AccessRequest>({ store: adapter, namespace: NS, useKeyPrefix: false, throwOnErrors: true });
  keyv.on('error', () => undefined); // surfaced as rejections (throwOnErrors); the client logs connection trouble
  const serialize = keyv.serialize;
  if (serialize === undefined) throw new Error('keyv has no serializer');
  const keyOf = (id: string): string => adapter.createKeyPrefix(REQ + id, NS);

  // The newest commit this instance made itself. Until the sync has followed the feed past it, every
  // read of the feed also checks that it is still in Redis's history: a Redis restored from an
  // older snapshot right after our commit (before our own sync saw it) must not go unnoticed.
  let own: { version: number; token: string } | null = null;

  const commit = async (req: AccessRequest, lock: { key: string; token: string } | null): Promise<void> => {
    const value = await serialize({ value: req, expires: undefined });
    const token = randomUUID();
    const keys = [keyOf(req.id), K.changes, K.version, K.epoch, lock?.key ?? K.lock(req.id), K.log];
    const args = [value, req.id, lock?.token ?? '', randomUUID(), K.channel, token];
    const version = Number(await withTimeout(client.eval(COMMIT, { keys, arguments: args }), COMMIT_TIMEOUT_MS, 'redis commit'));
    if (own === null || version > own.version) own = { version, token };
  };

  const since = async (version: number, head = ''): Promise<FeedPosition & { intact: boolean; ids: string[] }> => {
    const checks = version > 0 ? [String(version), head] : [];
    const mine = own;
    if (mine !== null && mine.version > version) checks.push(String(mine.version), mine.token);
    const reply = (await client.eval(SINCE, { keys: [K.changes, K.version, K.epoch, K.log], arguments: [String(version), randomUUID(), ...checks] })) as [string, string, string, number, string[]];
    const at = { epoch: reply[0], version: Number(reply[1]), head: reply[2], intact: reply[3] === 1, ids: reply[4] };
    // A full read (snapshot) that finds our commit gone: the reader now takes Redis as it is, so
    // stop checking for it (else every later read would report lost history again). Once the
    // reader's own position reaches our commit, the check above stops by itself.
    if (version === 0 && !at.intact && own === mine) own = null;
    return at;
  };

  const getMany = async (ids: string[]): Promise<AccessRequest[]> => {
    const out: AccessRequest[] = [];
    for (let i = 0; i < ids.length; i += 500) {
      for (const req of await keyv.getMany(ids.slice(i, i + 500).map((id) => REQ + id))) if (req) out.push(req);
    }
    return out;
  };

  const acquire = async (id: string): Promise<{ key: string; token: string }> => {
    const key = K.lock(id);
    const token = randomUUID();
    const deadline = Date.now() + lockWaitMs;
    for (let attempt = 0; ; attempt++) {
      // A lock set by a timed-out SET simply expires: nobody holds its token.
      if ((await withTimeout(client.set(key, token, { NX: true, PX: lockTtlMs }), lockWaitMs, 'redis lock')) === 'OK') return { key, token };
      if (Date.now() >= deadline) throw new StoreUnavailableError(`request ${id} is being changed elsewhere and its lock stayed busy for ${lockWaitMs} ms`);
      await sleep(Math.min(5 * 2 ** attempt, 50) + Math.random() * 10);
    }
  };

  const changes: ChangeFeed = {
    async snapshot() {
      const at = await since(0);
      return { epoch: at.epoch, version: at.version, head: at.head, requests: await getMany(at.ids) };
    },
    since,
    connected: () => client.isReady,
    async subscribe(hint) {
      if (opts.pubsub === false) return;
      subscriber.connect().catch(() => undefined);
      // Not awaited to completion: with Redis down this waits for the connection, the poll covers the gap.
      subscriber.subscribe(K.channel, (id) => hint(id)).catch((err: unknown) => log.warn({ err }, 'redis subscribe failed; relying on polling'));
    },
  };

  const rateLimiter: RateLimiter = {
    async take(user, rule, now) {
      const reply = await withTimeout(client.eval(RATE_TAKE, { keys: [K.rate(user)], arguments: [String(rule.burst), String(rule.perHour), String(Math.floor(now))] }), COMMIT_TIMEOUT_MS, 'redis rate limit');
      return Number(reply);
    },
  };

  return {
    changes,
    rateLimiter,
    get: (id) => withTimeout(keyv.get(REQ + id), COMMIT_TIMEOUT_MS, 'redis read'),
    put: (req) => commit(req, null),
    forEach: async (visit) => {
      for (const req of (await changes.snapshot()).requests) visit(req);
    },
    async withLock(id, fn) {
      const lock = await acquire(id);
      const put: LockedPut = (req) => {
        if (req.id !== id) return Promise.reject(new Error(`lock on ${id} cannot store ${req.id}`));
        return commit(req, lock);
      };
      try {
        return await fn(put);
      } finally {
        await client.eval(RELEASE, { keys: [lock.key], arguments: [lock.token] }).catch(() => undefined); // expires on its own
      }
    },
    async removeEnded(ids) {
      const removed: string[] = [];
      for (let i = 0; i < ids.length; i += 200) {
        const batch = ids.slice(i, i + 200);
        const keys = [K.changes, ...batch.flatMap((id) => [keyOf(id), K.lock(id)])];
        removed.push(...((await withTimeout(client.eval(REMOVE_ENDED, { keys, arguments: batch }), COMMIT_TIMEOUT_MS, 'redis prune')) as string[]));
      }
      return removed;
    },
    async ping() {
      try {
        return (await withTimeout(client.ping(), PING_TIMEOUT_MS, 'redis ping')) === 'PONG';
      } catch {
        return false;
      }
    },
    async close() {
      for (const c of [subscriber, client]) {
        try {
          c.destroy(); // nothing to flush: every command we sent has been answered or given up on
        } catch {
          // already closed
        }
      }
    },
  };
}

interface Emitter {
  on(event: 'error' | 'ready', listener: (err?: unknown) => void): unknown;
}

/** Logs an outage once when it starts and once when it ends, not every reconnect attempt. */
function watchConnection(client: Emitter, log: Logger, role: string): void {
  let down = false;
  client.on('error', (err: unknown) => {
    if (down) return;
    down = true;
    log.error({ err, role }, 'redis connection lost; gated tasks answer 503 until it is back');
  });
  client.on('ready', () => {
    if (!down) return;
    down = false;
    log.info({ role }, 'redis connection restored');
  });
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new StoreUnavailableError(`${what} took over ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** The URL without a password, for logs. */
function redact(url: string): string {
  return url.replace(/\/\/([^@/]*)@/, '//***@');
}
