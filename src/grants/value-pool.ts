import type { Sharing } from './model.js';

/**
 * Shares equal values among the grants held in memory. The same users, policies and task lists
 * recur across thousands of grants, and each parsed copy would otherwise be its own string and
 * Set on the V8 heap. That matters beyond memory: every young-generation GC costs more the
 * larger the old generation is (bench/RESULTS.md, session 4), so the state's size shows up as
 * CPU on every proxied request.
 *
 * What is pooled is bounded by the distinct users, tasks and policies seen; `clear` drops it all
 * when the whole state is replaced. Pooled Sets are shared: nothing may modify them.
 */
export class ValuePool implements Sharing {
  readonly #strings = new Map<string, string>();
  readonly #sets = new Map<string, ReadonlySet<string>>();

  string(s: string): string {
    const pooled = this.#strings.get(s);
    if (pooled !== undefined) return pooled;
    this.#strings.set(s, s);
    return s;
  }

  /** One shared Set per distinct task list (a grant's task keys), in order. */
  set(items: readonly string[]): ReadonlySet<string> {
    const key = JSON.stringify(items);
    let pooled = this.#sets.get(key);
    if (pooled === undefined) {
      pooled = new Set(items.map((s) => this.string(s)));
      this.#sets.set(key, pooled);
    }
    return pooled;
  }

  clear(): void {
    this.#strings.clear();
    this.#sets.clear();
  }
}
