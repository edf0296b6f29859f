import { LRUCache } from 'lru-cache';

export interface RefusalLimits {
  /** Refusals a client may collect at once. */
  burst: number;
  /** Refusals per second it earns back. */
  perSecond: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

/** Clients (addresses) followed at once; the least recently refused are forgotten first. */
const MAX_ADDRESSES = 10_000;

/**
 * Refusals per client, a token bucket per (client address, user). Every refused request on a
 * command route costs the event loop a body read, a parse and a durable audit write; a client
 * that spends its budget has its next requests on command routes answered 429 from the head
 * alone (no body read, no parse, no audit line each), so one client can neither crowd out the
 * others' calls nor fill the audit disk. Forwarded calls never spend the budget.
 *
 * The user is part of the key so that a flood from one address without a token (or with a
 * stolen one) does not throttle the other users behind the same address or balancer.
 */
export class RefusalLimiter {
  readonly #byAddress = new LRUCache<string, Map<string, Bucket>>({ max: MAX_ADDRESSES });

  constructor(
    private readonly limits: () => RefusalLimits,
    private readonly now: () => number,
  ) {}

  /** Whether any client was refused lately: while none was, requests pay for nothing else here. */
  get idle(): boolean {
    return this.#byAddress.size === 0;
  }

  /** Whether this address was refused lately: the cheap test before looking up who is calling. */
  watches(address: string): boolean {
    return this.#byAddress.has(address);
  }

  /** Seconds until this client may be refused again; 0 while it has budget left. */
  retryAfter(address: string, user: string): number {
    const bucket = this.#byAddress.peek(address)?.get(user);
    if (bucket === undefined) return 0;
    const { perSecond } = this.limits();
    const tokens = this.#refill(bucket);
    return tokens >= 1 ? 0 : Math.ceil((1 - tokens) / perSecond);
  }

  /** Counts one refusal; true when it spent the last of the budget (the client is throttled from now on). */
  spend(address: string, user: string): boolean {
    let users = this.#byAddress.get(address);
    if (users === undefined) {
      users = new Map();
      this.#byAddress.set(address, users);
    }
    let bucket = users.get(user);
    if (bucket === undefined) {
      bucket = { tokens: this.limits().burst, at: this.now() };
      users.set(user, bucket);
    }
    bucket.tokens = this.#refill(bucket) - 1;
    bucket.at = this.now();
    return bucket.tokens < 1;
  }

  #refill(bucket: Bucket): number {
    const { burst, perSecond } = this.limits();
    // A clock that steps back (NTP, tests) earns nothing rather than a debt.
    return Math.min(burst, bucket.tokens + (Math.max(0, this.now() - bucket.at) / 1000) * perSecond);
  }
}
