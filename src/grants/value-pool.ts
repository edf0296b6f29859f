import type { AccessRequest } from './model.js';

/**
 * Shares equal values among the requests held in memory. The same users, policies, approver
 * groups and task lists recur across thousands of requests, and each parsed copy would otherwise
 * be its own string, array and Set on the V8 heap. That matters beyond memory: every
 * young-generation GC costs more the larger the old generation is (bench/RESULTS.md, session 4),
 * so the state's size shows up as CPU on every proxied request.
 *
 * Ids, timestamps and reasons are unique per request and are not pooled. What is pooled is
 * bounded by the distinct users, tasks and policies seen; `clear` drops it all when the whole
 * state is replaced. Pooled arrays and Sets are shared: nothing may modify them.
 */
export class ValuePool {
  readonly #strings = new Map<string, string>();
  readonly #lists = new Map<string, string[]>();
  readonly #sets = new Map<string, ReadonlySet<string>>();

  string(s: string): string {
    const pooled = this.#strings.get(s);
    if (pooled !== undefined) return pooled;
    this.#strings.set(s, s);
    return s;
  }

  nullable(s: string | null): string | null {
    return s === null ? null : this.string(s);
  }

  /** One shared, frozen array per distinct task list. */
  list(items: readonly string[]): string[] {
    const key = JSON.stringify(items);
    let pooled = this.#lists.get(key);
    if (pooled === undefined) {
      pooled = Object.freeze(items.map((s) => this.string(s))) as string[];
      this.#lists.set(key, pooled);
    }
    return pooled;
  }

  /** One shared Set per distinct task list (a grant's task keys). */
  set(items: readonly string[]): ReadonlySet<string> {
    const key = JSON.stringify(items);
    let pooled = this.#sets.get(key);
    if (pooled === undefined) {
      pooled = new Set(items.map((s) => this.string(s)));
      this.#sets.set(key, pooled);
    }
    return pooled;
  }

  /** A copy of `req` whose recurring values are the pooled ones. */
  request(req: AccessRequest): AccessRequest {
    return {
      ...req,
      requester: this.string(req.requester),
      task: this.nullable(req.task),
      role: this.nullable(req.role),
      tasks: this.list(req.tasks),
      policy: this.string(req.policy),
      approverGroup: this.nullable(req.approverGroup),
      approvals: req.approvals.map((a) => ({ ...a, approver: this.string(a.approver) })),
      decidedBy: this.nullable(req.decidedBy),
    };
  }

  clear(): void {
    this.#strings.clear();
    this.#lists.clear();
    this.#sets.clear();
  }
}
