import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import Keyv from 'keyv';
import type { AccessRequest } from './model.js';
import { JournalStore } from './journal-store.js';

/**
 * Where access requests live. The service is the only user; it never assumes the
 * store is local, so the same code runs on the embedded journal and on Redis.
 */
export interface RequestStore {
  get(id: string): Promise<AccessRequest | undefined>;
  put(request: AccessRequest): Promise<void>;
  list(): Promise<AccessRequest[]>;
  /** Runs `fn` with no other holder of the same id's lock anywhere (this process, or every instance for shared stores). */
  withLock<T>(id: string, fn: () => Promise<T>): Promise<T>;
  /** Whether the store answers right now (for /readyz). */
  ping(): Promise<boolean>;
  close(): Promise<void>;
}

const NAMESPACE = 'pamgate';
const PREFIX = 'req:';

/** The embedded store: keyv over a journal file in the data dir. */
export async function openEmbeddedStore(dataDir: string): Promise<RequestStore> {
  await mkdir(dataDir, { recursive: true });
  const journal = await JournalStore.open(join(dataDir, 'state.journal'));
  const keyv = new Keyv<AccessRequest>({ store: journal, namespace: NAMESPACE, throwOnErrors: true });
  const locks = new LocalLocks();
  return {
    get: (id) => keyv.get(PREFIX + id),
    put: async (req) => {
      await keyv.set(PREFIX + req.id, req);
    },
    list: async () => {
      const out: AccessRequest[] = [];
      for (const [key] of journal.entries(`${NAMESPACE}:${PREFIX}`)) {
        const req = await keyv.get(key.slice(NAMESPACE.length + 1));
        if (req) out.push(req);
      }
      return out;
    },
    withLock: (id, fn) => locks.run(id, fn),
    ping: async () => true,
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
