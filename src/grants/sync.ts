import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { AccessRequest } from './model.js';
import type { ChangeFeed } from './store.js';

/** What the sync needs of the service. */
export interface SyncTarget {
  /**
   * Replaces everything known (first load, or the store lost its history) with what the store
   * holds, except that a request this instance has seen ended (revoked, expired, denied,
   * canceled) stays ended. Returns those ended copies the store has as still open.
   */
  replace(requests: AccessRequest[]): AccessRequest[] | void;
  /** Re-reads one request from the store. */
  refresh(id: string): Promise<void>;
  /** Writes ended copies back over the store's open ones (after lost history), so every instance ends them too. */
  reassert?(requests: AccessRequest[]): Promise<void>;
}

export interface SyncOptions {
  /** Poll period; bounds staleness when pub/sub messages are lost. */
  intervalMs?: number;
  /** Grants are trusted only while the last good sync started at most this long ago. */
  staleMs?: number;
  log: Logger;
}

export const DEFAULT_POLL_MS = 200;
export const DEFAULT_STALE_MS = 1_000;

/**
 * Keeps this instance's in-memory view in step with a shared store. A pub/sub announcement
 * triggers an immediate sync; a poll every `intervalMs` catches whatever pub/sub dropped. Each
 * sync reads the ids committed since the last one, so announcements and polls share one ordered
 * path and nothing is applied twice. "Since" is only meaningful on the same history: a new epoch
 * (data lost), a version lower than the one followed, or a commit followed (or made here) that
 * is no longer in Redis's history (restored from an older snapshot, a lagging replica) makes the
 * next sync a full reload instead.
 *
 * Freshness is the safety bound: `fresh()` is true only while the last completed sync *started*
 * within `staleMs`, so everything committed more than `staleMs` ago is already reflected. When
 * Redis is down or slow, `fresh()` turns false within `staleMs` and gated tasks fail closed.
 */
export class StoreSync {
  readonly #feed: ChangeFeed;
  readonly #target: SyncTarget;
  readonly #intervalMs: number;
  readonly #staleMs: number;
  readonly #log: Logger;
  #lastGoodStart = -Infinity;
  #epoch: string | null = null;
  #version = 0;
  #head = '';
  #running: Promise<void> | null = null;
  #again = false;
  #timer: NodeJS.Timeout | null = null;
  #stopped = false;
  #failing = false;

  constructor(feed: ChangeFeed, target: SyncTarget, opts: SyncOptions) {
    this.#feed = feed;
    this.#target = target;
    this.#intervalMs = opts.intervalMs ?? DEFAULT_POLL_MS;
    this.#staleMs = opts.staleMs ?? DEFAULT_STALE_MS;
    this.#log = opts.log.child({ component: 'store-sync' });
  }

  /**
   * Hot path: no I/O, no allocation. False at once when the client reports its connection down
   * (so a dead Redis fails closed immediately, not after the bound), and false once the last
   * good sync is older than the bound (covers a Redis that hangs without dropping the socket).
   */
  readonly fresh = (): boolean => this.#feed.connected() && performance.now() - this.#lastGoodStart <= this.#staleMs;

  /** Subscribes, tries a first full load (not fatal: the poll keeps trying), starts polling. */
  async start(): Promise<void> {
    await this.#feed.subscribe(this.poke);
    await this.poke();
    this.#schedule();
  }

  /** Syncs now (coalesced with one already running). */
  readonly poke = (): Promise<void> => {
    if (this.#stopped) return Promise.resolve();
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = this.#loop().finally(() => {
      this.#running = null;
    });
    return this.#running;
  };

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    await this.#running;
  }

  async #loop(): Promise<void> {
    do {
      this.#again = false;
      await this.#once();
    } while (this.#again && !this.#stopped);
  }

  async #once(): Promise<void> {
    const started = performance.now();
    try {
      if (this.#epoch === null) {
        await this.#reload();
      } else {
        const changed = await this.#feed.since(this.#version, this.#head);
        if (changed.epoch !== this.#epoch) {
          this.#log.error({ was: this.#epoch, now: changed.epoch }, 'shared store lost its history (new epoch); reloading everything');
          await this.#reload();
        } else if (!changed.intact || changed.version < this.#version) {
          // Restored from an older snapshot or failed over to a lagging replica: commits this
          // instance followed (or made) are gone, and new ones may reuse their versions, so the
          // ids "since" our version would miss changes. Only a full read is trustworthy.
          this.#log.error({ known: this.#version, now: changed.version }, 'shared store went back in its history (restored from an older snapshot or a lagging replica); reloading everything');
          await this.#reload();
        } else {
          await Promise.all(changed.ids.map((id) => this.#target.refresh(id)));
          this.#version = changed.version;
          this.#head = changed.head;
        }
      }
      this.#lastGoodStart = started;
      if (this.#failing) this.#log.info('shared store sync recovered');
      this.#failing = false;
    } catch (err) {
      if (!this.#failing) this.#log.error({ err }, 'shared store sync failed; gated tasks fail closed once the last good sync is too old');
      this.#failing = true;
    }
  }

  async #reload(): Promise<void> {
    const snap = await this.#feed.snapshot();
    const ahead = this.#target.replace(snap.requests) ?? [];
    this.#epoch = snap.epoch;
    this.#version = snap.version;
    this.#head = snap.head;
    if (ahead.length > 0 && this.#target.reassert) {
      this.#log.warn({ requests: ahead.map((r) => ({ id: r.id, status: r.status })) }, 'the shared store lost the end of requests this instance saw ended; writing them back');
      // Not awaited: the reassertions go through the normal locked commit and come back through the feed.
      this.#target.reassert(ahead).catch((err: unknown) => this.#log.error({ err }, 'could not write ended requests back to the shared store'));
    }
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      void this.poke().finally(() => this.#schedule());
    }, this.#intervalMs);
    this.#timer.unref();
  }
}
