import type { Logger } from 'pino';
import type { DiskWatch } from './disk.js';
import type { AuditEvent } from './log.js';
import { pruneSegments, type RetentionPolicy } from './retention.js';

const PRUNE_EVERY_MS = 3_600_000;

/**
 * Keeps the audit disk in check while the gateway runs: the free-space watermark (disk.ts) every few
 * seconds, and retention (retention.ts) hourly; both again after each rotation, when a segment has
 * just been closed.
 */
export class AuditUpkeep {
  readonly #dir: string;
  readonly #append: (event: AuditEvent) => Promise<void>;
  readonly #disk: DiskWatch;
  readonly #retention: RetentionPolicy | null;
  readonly #now: () => number;
  readonly #log: Logger;
  #timer: NodeJS.Timeout | null = null;
  #pruning: Promise<void> | null = null;
  #pruneAgain = false;

  constructor(opts: { dir: string; append: (event: AuditEvent) => Promise<void>; disk: DiskWatch; retention: RetentionPolicy | null; now: () => number; log: Logger }) {
    this.#dir = opts.dir;
    this.#append = opts.append;
    this.#disk = opts.disk;
    this.#retention = opts.retention;
    this.#now = opts.now;
    this.#log = opts.log;
  }

  async start(): Promise<void> {
    await this.#disk.start();
    if (this.#retention === null) return;
    await this.prune();
    this.#timer = setInterval(() => void this.prune(), PRUNE_EVERY_MS);
    this.#timer.unref();
  }

  readonly afterRotation = (): void => {
    void this.#disk.check();
    void this.prune();
  };

  /** One retention run at a time; a call during a run asks for one more after it. Never rejects. */
  prune(): Promise<void> {
    if (this.#retention === null) return Promise.resolve();
    if (this.#pruning !== null) {
      this.#pruneAgain = true;
      return this.#pruning;
    }
    this.#pruning = (async () => {
      do {
        this.#pruneAgain = false;
        await this.#pruneOnce(this.#retention!);
      } while (this.#pruneAgain);
    })().finally(() => {
      this.#pruning = null;
    });
    return this.#pruning;
  }

  async stop(): Promise<void> {
    this.#disk.stop();
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    await this.#pruning;
  }

  async #pruneOnce(policy: RetentionPolicy): Promise<void> {
    try {
      const pruned = await pruneSegments(this.#dir, policy, this.#now(), this.#append);
      if (pruned === null) return;
      this.#log.info({ segments: pruned.segments, throughSeq: pruned.throughSeq }, 'audit segments deleted by retention (recorded as audit.pruned)');
      void this.#disk.check();
    } catch (err) {
      this.#log.error({ err }, 'audit retention run failed; segments kept');
    }
  }
}
