/** How fast one user may file requests: a token bucket of `burst` tokens, refilled at `perHour`. */
export interface RateRule {
  burst: number;
  perHour: number;
}

export interface RateLimiter {
  /** Takes a token from `key`'s bucket at `now` (ms): 0 when one was there, else the ms until one will be. */
  take(key: string, rule: RateRule, now: number): Promise<number>;
}

const HOUR = 3_600_000;

/** One bucket: tokens left at `at` (ms). */
interface Bucket {
  tokens: number;
  at: number;
}

/** The bucket's state at `now`: refilled for the time passed (a clock that went back refills nothing). */
export function refill(bucket: Bucket | undefined, rule: RateRule, now: number): Bucket {
  if (bucket === undefined) return { tokens: rule.burst, at: now };
  if (now <= bucket.at) return { tokens: Math.min(bucket.tokens, rule.burst), at: bucket.at };
  return { tokens: Math.min(rule.burst, bucket.tokens + ((now - bucket.at) * rule.perHour) / HOUR), at: now };
}

/** Ms until a bucket with `tokens` has one whole token. */
export function waitFor(tokens: number, rule: RateRule): number {
  return Math.max(1, Math.ceil(((1 - tokens) * HOUR) / rule.perHour));
}

/**
 * Buckets in this process's memory (the embedded store: one process per data dir). A full bucket
 * is the same as none, so full ones are dropped whenever the map has doubled: it holds only the
 * users who filed recently.
 */
export class LocalRateLimiter implements RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private sweepAt = 1024;

  async take(key: string, rule: RateRule, now: number): Promise<number> {
    const bucket = refill(this.buckets.get(key), rule, now);
    if (bucket.tokens < 1) {
      this.buckets.set(key, bucket);
      return waitFor(bucket.tokens, rule);
    }
    this.buckets.set(key, { tokens: bucket.tokens - 1, at: bucket.at });
    if (this.buckets.size >= this.sweepAt) this.dropFull(rule, now);
    return 0;
  }

  private dropFull(rule: RateRule, now: number): void {
    for (const [key, bucket] of this.buckets) if (refill(bucket, rule, now).tokens >= rule.burst) this.buckets.delete(key);
    this.sweepAt = Math.max(1024, 2 * this.buckets.size);
  }
}
