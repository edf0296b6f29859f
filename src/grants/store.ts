import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import Keyv from 'keyv';
import type { AccessRequest } from './model.js';
import { isEnded } from './model.js';
import { JournalStore, type JournalOptions } from './journal-store.js';
import type { RateLimiter } from './rate-limit.js';

/** Stores `request` on behalf of the lock holder; rejects if the lock was lost meanwhile. */
export type LockedPut = (request: AccessRequest) => Promise<void>;

/**
 * Where access requests live. The service is the only user; it never assumes the
 * store is local, so the same code runs on the embedded journal and on Redis.
 */
export interface RequestStore {
  get(id: string): Promise<AccessRequest | undefined>;
  /** Stores a request no one else can be changing yet (a new id). */
  put(request: AccessRequest): Promise<void>;
  /**
   * Calls `visit` with every stored request, one at a time. The embedded store parses each only
   * when it is visited, so loading a large state never holds it all on the heap at once (it would
   * be promoted, then sit there as garbage until a full GC under load); the Redis store visits
   * the requests of one snapshot it has read whole.
   */
  forEach(visit: (request: AccessRequest) => void): Promise<void>;
  /**
   * Runs `fn` with no other holder of the same id's lock anywhere (this process, or every
   * instance for shared stores). Changes go through the `put` it is given, which is fenced:
   * it stores nothing once the lock has been lost (e.g. expired during a long pause).
   */
  withLock<T>(id: string, fn: (put: LockedPut) => Promise<T>): Promise<T>;
  /**
   * Deletes those of `ids` the store holds as ended (revoked, expired, denied, canceled) and no
   * one is changing right now; returns the ids it deleted (an id the store does not have counts
   * as deleted). The retention of closed requests; the audit file keeps their history.
   */
  removeEnded(ids: readonly string[]): Promise<string[]>;
  /** Whether the store answers right now (for /readyz). */
  ping(): Promise<boolean>;
  close(): Promise<void>;
  /** Present on stores shared by several instances: what the others changed. */
  readonly changes?: ChangeFeed;
  /** Present on stores shared by several instances: request-rate buckets every instance shares. */
  readonly rateLimiter?: RateLimiter;
}

/** Where a reader stands in a shared store's history. */
export interface FeedPosition {
  /** Random id of the store's history; a new one means the store lost its data. */
  epoch: string;
  /** The newest commit. */
  version: number;
  /** Random token of the commit at `version` ('' when there is none or it predates the log). */
  head: string;
}

/** A shared store's record of commits, so each instance can follow the others. */
export interface ChangeFeed {
  /** Every request, with the feed position it is at least as new as. */
  snapshot(): Promise<FeedPosition & { requests: AccessRequest[] }>;
  /**
   * Ids committed after `version`, and the newest position. A new `epoch` means the store lost its
   * data; `intact: false` means it went back in its history (restored from an older snapshot,
   * failed over to a lagging replica): the commit at `version` with token `head`, or a commit this
   * instance made itself, is no longer there. Either way: reload everything.
   */
  since(version: number, head?: string): Promise<FeedPosition & { intact: boolean; ids: string[] }>;
  /** Calls `hint` whenever some instance announces a commit. Best effort: messages can be lost. */
  subscribe(hint: (id: string) => void): Promise<void>;
  /** Whether the connection is up right now, as the client's own events tell it (no I/O). */
  readonly connected: () => boolean;
}

const NAMESPACE = 'pamgate';
const PREFIX = 'req:';

/** The embedded store: keyv over a journal file in the data dir. One process per data dir. */
export async function openEmbeddedStore(dataDir: string, opts: JournalOptions = {}): Promise<RequestStore & { journal: JournalStore }> {
  await mkdir(dataDir, { recursive: true });
  const journal = await JournalStore.open(join(dataDir, 'state.journal'), opts);
  const keyv = new Keyv<AccessRequest>({ store: journal, namespace: NAMESPACE, throwOnErrors: true });
  const locks = new LocalLocks();
  const put = async (req: AccessRequest): Promise<void> => {
    await keyv.set(PREFIX + req.id, req);
  };
  return {
    journal,
    get: (id) => keyv.get(PREFIX + id),
    put,
    forEach: async (visit) => {
      for (const key of journal.keys(`${NAMESPACE}:${PREFIX}`)) {
        const req = await keyv.get(key.slice(NAMESPACE.length + 1));
        if (req) visit(req);
      }
    },
    withLock: (id, fn) => locks.run(id, () => fn(put)),
    async removeEnded(ids) {
      // One process owns the data dir, and a change to an ended request is refused before it is stored: nothing can race this.
      const removable: string[] = [];
      for (const id of ids) {
        const req = await keyv.get(PREFIX + id);
        if (req === undefined || isEnded(req)) removable.push(id);
      }
      await journal.deleteEach(removable.map((id) => `${NAMESPACE}:${PREFIX}${id}`));
      return removable;
    },
    ping: async () => journal.usable(),
    close: () => keyv.disconnect(),
  };
}

/** In-process mutual exclusion per key: callers for one key run one after another. */
export class LocalLocks {
  private readonly tails = new Map<string, Promise<unknown>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const before = this.tails.get(key) ?? Promise.resolve();
    const result = before.then(fn, fn);
    const tail = result.catch(() => undefined);
    this.tails.set(key, tail);
    try {
      return await result;
    } finally {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}
