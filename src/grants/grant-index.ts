import { LRUCache } from 'lru-cache';
import type { Grant } from '../policy/decide.js';
import { PackedMap } from './packed-map.js';

/** A grant as packed: its task keys as a list. */
interface PackedGrant {
  requestId: string;
  requester: string;
  policyId: string;
  taskKeys: string[];
  scope: Readonly<Record<string, string>> | null;
  expiresAt: number;
}

/** Users whose parsed grants stay on the heap: far more admins than are active in any four hours. */
const HOT_USERS = 10_000;
const EMPTY: readonly Grant[] = Object.freeze([]);

/**
 * Each user's active grants, for the hot path. Every user's list is packed off the V8 heap
 * (PackedMap); only the users who sent requests lately have theirs parsed, in an LRU. A grant
 * object per grant on the heap, for every user who holds one, made each full GC of a large
 * gateway mark them all, and after idling one such GC runs at the start of load
 * (docs/design/006-state-off-the-heap.md).
 *
 * Every write drops the user's parsed copy, so `get` never returns a list older than the last
 * `set`. (The hot path still checks each grant's expiry and holder itself.)
 */
export class GrantIndex {
  readonly #packed = new PackedMap<PackedGrant[]>();
  readonly #hot: LRUCache<string, readonly Grant[]>;

  constructor(hotUsers: number = HOT_USERS) {
    this.#hot = new LRUCache({ max: hotUsers });
  }

  /** Number of users holding at least one grant. */
  get users(): number {
    return this.#packed.size;
  }

  /** A user's grants (hot path: after the first call, an LRU lookup, no parsing). Shared: do not modify. */
  get(user: string): readonly Grant[] {
    const hot = this.#hot.get(user);
    if (hot !== undefined) return hot;
    const packed = this.#packed.get(user);
    if (packed === undefined) return EMPTY;
    const grants = Object.freeze(packed.map(unpack));
    this.#hot.set(user, grants);
    return grants;
  }

  /** A fresh copy of a user's grants that does not make the user hot (writes, loading). */
  peek(user: string): Grant[] {
    return this.#packed.get(user)?.map(unpack) ?? [];
  }

  /** Replaces a user's grants; an empty list removes the user. */
  set(user: string, grants: readonly Grant[]): void {
    this.#hot.delete(user);
    if (grants.length === 0) {
      this.#packed.delete(user);
      return;
    }
    try {
      this.#packed.set(user, grants.map(pack));
    } catch (err) {
      // Keeping the old list would keep a grant this write meant to end: the user loses them all.
      this.#packed.delete(user);
      throw err;
    }
  }

  clear(): void {
    this.#hot.clear();
    this.#packed.clear();
  }
}

function pack(grant: Grant): PackedGrant {
  return { ...grant, taskKeys: [...grant.taskKeys] };
}

function unpack(packed: PackedGrant): Grant {
  return { ...packed, taskKeys: new Set(packed.taskKeys) };
}
