/**
 * Request ids by the time they fall due, earliest first (a binary min-heap over two parallel
 * arrays). The expiry sweep pops only what is due instead of scanning every request ever made.
 * Entries are never updated in place: a request that moved on leaves its old entry behind, and
 * the sweep checks the request itself before acting on an entry.
 */
export class ExpiryQueue {
  private readonly times: number[] = [];
  private readonly ids: string[] = [];

  get size(): number {
    return this.times.length;
  }

  /** When the earliest entry falls due; Infinity when there is none. */
  get nextAt(): number {
    return this.times[0] ?? Infinity;
  }

  /** A time that is not a finite number (an unparseable deadline) is refused: NaN would block the heap. */
  push(at: number, id: string): boolean {
    if (!Number.isFinite(at)) return false;
    this.times.push(at);
    this.ids.push(id);
    this.up(this.times.length - 1);
    return true;
  }

  /** Removes and returns every id due at `now` (at ≤ now), earliest first. */
  popDue(now: number): string[] {
    const due: string[] = [];
    while (this.times.length > 0 && this.times[0]! <= now) due.push(this.pop());
    return due;
  }

  clear(): void {
    this.times.length = 0;
    this.ids.length = 0;
  }

  private pop(): string {
    const top = this.ids[0]!;
    const lastAt = this.times.pop()!;
    const lastId = this.ids.pop()!;
    if (this.times.length > 0) {
      this.times[0] = lastAt;
      this.ids[0] = lastId;
      this.down(0);
    }
    return top;
  }

  private up(i: number): void {
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (this.times[parent]! <= this.times[i]!) return;
      this.swap(i, parent);
      i = parent;
    }
  }

  private down(i: number): void {
    const n = this.times.length;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let least = i;
      if (left < n && this.times[left]! < this.times[least]!) least = left;
      if (right < n && this.times[right]! < this.times[least]!) least = right;
      if (least === i) return;
      this.swap(i, least);
      i = least;
    }
  }

  private swap(a: number, b: number): void {
    const t = this.times[a]!;
    this.times[a] = this.times[b]!;
    this.times[b] = t;
    const id = this.ids[a]!;
    this.ids[a] = this.ids[b]!;
    this.ids[b] = id;
  }
}
