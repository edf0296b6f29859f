import type { RequestStatus, Visibility } from './model.js';

/** What `AccessService.list` filters and sorts on, per request. */
export interface Listing extends Visibility {
  status: RequestStatus;
  /** When the request expires unless something happens first (ms); NaN once it has ended, or when it never does. */
  dueAt: number;
  /** ms since epoch. */
  createdAt: number;
}

const STATUSES: readonly RequestStatus[] = ['pending', 'approved', 'denied', 'canceled', 'expired', 'revoked'];
const NONE = -1;

/**
 * Every request's listing, in typed-array columns: a few numbers per request and no object.
 * A full GC's marking costs per object, and a large gateway runs one at the start of load after
 * idling, which held up proxied requests (docs/design/006-state-off-the-heap.md): an object, a date string
 * and a boxed number per request were 300,000 objects at 100,000 requests. Requester, policy and
 * group are numbered in `#names`.
 */
export class ListingTable {
  readonly #slotOf = new Map<string, number>();
  readonly #ids: string[] = [];
  readonly #names = new Names();
  #requester = new Int32Array(INITIAL);
  #policy = new Int32Array(INITIAL);
  #group = new Int32Array(INITIAL);
  #approvalsRequired = new Float64Array(INITIAL);
  #status = new Uint8Array(INITIAL);
  #dueAt = new Float64Array(INITIAL);
  #createdAt = new Float64Array(INITIAL);

  get size(): number {
    return this.#ids.length;
  }

  set(id: string, listing: Listing): void {
    let slot = this.#slotOf.get(id);
    if (slot === undefined) {
      slot = this.#ids.length;
      if (slot === this.#status.length) this.#grow();
      this.#ids.push(id);
      this.#slotOf.set(id, slot);
    }
    this.#requester[slot] = this.#names.number(listing.requester);
    this.#policy[slot] = this.#names.number(listing.policy);
    this.#group[slot] = listing.approverGroup === null ? NONE : this.#names.number(listing.approverGroup);
    this.#approvalsRequired[slot] = listing.approvalsRequired;
    this.#status[slot] = STATUSES.indexOf(listing.status);
    this.#dueAt[slot] = listing.dueAt;
    this.#createdAt[slot] = listing.createdAt;
  }

  /** Forgets a request: the last row moves into its slot, so the columns stay dense. */
  delete(id: string): boolean {
    const slot = this.#slotOf.get(id);
    if (slot === undefined) return false;
    const last = this.#ids.length - 1;
    if (slot !== last) {
      const moved = this.#ids[last]!;
      this.#ids[slot] = moved;
      this.#slotOf.set(moved, slot);
      for (const column of [this.#requester, this.#policy, this.#group, this.#approvalsRequired, this.#status, this.#dueAt, this.#createdAt]) column[slot] = column[last]!;
    }
    this.#ids.pop();
    this.#slotOf.delete(id);
    return true;
  }

  /** When the request was created (ms), or undefined for an id never set. */
  createdAt(id: string): number | undefined {
    const slot = this.#slotOf.get(id);
    return slot === undefined ? undefined : this.#createdAt[slot];
  }

  /**
   * Calls `visit` for each request, in the order first set (a delete moves the last one into the gap). `row` is one object refilled for every
   * call: read it, do not keep it.
   */
  forEach(visit: (id: string, row: Readonly<Listing>) => void): void {
    const row: Listing = { requester: '', policy: '', approverGroup: null, approvalsRequired: 0, status: 'pending', dueAt: NaN, createdAt: NaN };
    for (let slot = 0; slot < this.#ids.length; slot++) {
      row.requester = this.#names.name(this.#requester[slot]!);
      row.policy = this.#names.name(this.#policy[slot]!);
      const group = this.#group[slot]!;
      row.approverGroup = group === NONE ? null : this.#names.name(group);
      row.approvalsRequired = this.#approvalsRequired[slot]!;
      row.status = STATUSES[this.#status[slot]!]!;
      row.dueAt = this.#dueAt[slot]!;
      row.createdAt = this.#createdAt[slot]!;
      visit(this.#ids[slot]!, row);
    }
  }

  /** Requests approved and not yet due at `now`: the active grants. */
  countActive(now: number): number {
    const approved = STATUSES.indexOf('approved');
    let n = 0;
    for (let slot = 0; slot < this.#ids.length; slot++) if (this.#status[slot] === approved && this.#dueAt[slot]! > now) n++;
    return n;
  }

  #grow(): void {
    const size = this.#status.length * 2;
    const grown = <T extends Int32Array | Float64Array | Uint8Array>(column: T, make: new (n: number) => T): T => {
      const next = new make(size);
      next.set(column);
      return next;
    };
    this.#requester = grown(this.#requester, Int32Array);
    this.#policy = grown(this.#policy, Int32Array);
    this.#group = grown(this.#group, Int32Array);
    this.#approvalsRequired = grown(this.#approvalsRequired, Float64Array);
    this.#status = grown(this.#status, Uint8Array);
    this.#dueAt = grown(this.#dueAt, Float64Array);
    this.#createdAt = grown(this.#createdAt, Float64Array);
  }
}

const INITIAL = 1024;

/** Numbers each distinct string once (users, policies and groups recur across requests). */
class Names {
  readonly #numbers = new Map<string, number>();
  readonly #names: string[] = [];

  number(name: string): number {
    let n = this.#numbers.get(name);
    if (n === undefined) {
      n = this.#names.length;
      this.#names.push(name);
      this.#numbers.set(name, n);
    }
    return n;
  }

  name(n: number): string {
    return this.#names[n]!;
  }
}
