/**
 * A Map from string keys to JSON values whose bytes live outside the V8 heap, packed into a few
 * large slabs; only the keys, the index and one number per entry stay on the heap.
 *
 * Why: the state holds every request ever made, and each parsed request is ~20 objects and
 * strings on the heap. V8 pays for a large heap on every proxied request: each young-generation
 * GC costs more, and after the gateway idles it does more of them and one full GC of the whole
 * heap per stretch of load (bench/RESULTS.md, sessions 4–6). Per-value Buffers (session 4) moved
 * the bytes off the heap but left two objects per value behind; slabs leave none.
 *
 * A string is stored as its UTF-8 bytes; anything else (and a string with a lone surrogate, which
 * UTF-8 cannot carry) as its JSON text, which escapes it. `get` parses a fresh copy every time:
 * callers may change what they get without touching what is stored.
 *
 * A replaced or deleted value leaves its bytes behind as garbage. Once the garbage outweighs the
 * live bytes (and a slab's worth), the live values are copied into new slabs in one pass: a pause
 * proportional to the live bytes, at most once per as many bytes written since the last one.
 */
export class PackedMap<V = unknown> {
  /** key → where its entry starts: slab number × SLAB_BYTES + offset in the slab. */
  #index = new Map<string, number>();
  #slabs: Buffer[] = [];
  /** Write position in the last slab. */
  #cursor = SLAB_BYTES;
  /** Bytes of the entries the index points at, headers included. */
  #liveBytes = 0;
  /** Bytes of every slab handed out (live entries, garbage, unused slab tails). */
  #usedBytes = 0;

  get size(): number {
    return this.#index.size;
  }

  has(key: string): boolean {
    return this.#index.has(key);
  }

  get(key: string): V | undefined {
    const at = this.#index.get(key);
    return at === undefined ? undefined : (this.#read(at) as V);
  }

  /** Throws (and stores nothing) for a value that has no JSON text: undefined, a function, a symbol. */
  set(key: string, value: V): this {
    let text: string;
    let kind: number;
    if (typeof value === 'string' && value.isWellFormed()) {
      text = value;
      kind = KIND_TEXT;
    } else {
      const json: unknown = JSON.stringify(value);
      if (typeof json !== 'string') throw new TypeError(`value for key ${JSON.stringify(key)} is not a JSON value`);
      text = json;
      kind = KIND_JSON;
    }
    const at = this.#write(text, kind);
    this.#drop(this.#index.get(key));
    this.#index.set(key, at);
    this.#compactIfWasteful();
    return this;
  }

  delete(key: string): boolean {
    const at = this.#index.get(key);
    if (at === undefined) return false;
    this.#drop(at);
    this.#index.delete(key);
    this.#compactIfWasteful();
    return true;
  }

  clear(): void {
    this.#index.clear();
    this.#slabs = [];
    this.#cursor = SLAB_BYTES;
    this.#liveBytes = 0;
    this.#usedBytes = 0;
  }

  keys(): IterableIterator<string> {
    return this.#index.keys();
  }

  *values(): Generator<V> {
    for (const at of this.#index.values()) yield this.#read(at) as V;
  }

  *entries(): Generator<[string, V]> {
    for (const [key, at] of this.#index) yield [key, this.#read(at) as V];
  }

  /** Bytes held off the heap (slabs), and how many of them are live entries: for tests and diagnostics. */
  bytes(): { held: number; live: number } {
    return { held: this.#usedBytes, live: this.#liveBytes };
  }

  #write(text: string, kind: number): number {
    const length = Buffer.byteLength(text, 'utf8');
    const size = HEADER_BYTES + length;
    if (size > SLAB_BYTES - this.#cursor) {
      if (this.#slabs.length >= MAX_SLABS) throw new RangeError('PackedMap: more than 2 GiB of values');
      // Not Buffer.alloc: zeroing is wasted (only written ranges are ever read). A value larger
      // than a slab gets a slab of its own.
      this.#slabs.push(Buffer.allocUnsafeSlow(Math.max(SLAB_BYTES, size)));
      this.#usedBytes += SLAB_BYTES - this.#cursor; // the previous slab's unused tail: garbage
      this.#cursor = 0;
    }
    const n = this.#slabs.length - 1;
    const slab = this.#slabs[n]!;
    slab.writeUInt32LE(length * 2 + kind, this.#cursor);
    slab.write(text, this.#cursor + HEADER_BYTES, length, 'utf8');
    const at = n * SLAB_BYTES + this.#cursor;
    // A slab of its own is full: the next value starts a new one.
    this.#cursor = size > SLAB_BYTES ? SLAB_BYTES : this.#cursor + size;
    this.#usedBytes += size;
    this.#liveBytes += size;
    return at;
  }

  #read(at: number): unknown {
    const { text, kind } = entryAt(this.#slabs, at);
    return kind === KIND_JSON ? JSON.parse(text) : text;
  }

  #drop(at: number | undefined): void {
    if (at !== undefined) this.#liveBytes -= HEADER_BYTES + entryLength(this.#slabs, at);
  }

  #compactIfWasteful(): void {
    const garbage = this.#usedBytes - this.#liveBytes;
    if (garbage > this.#liveBytes && garbage > SLAB_BYTES) this.compact();
  }

  /** Copies every live entry into fresh slabs and lets the old ones go. */
  compact(): void {
    const old = this.#slabs;
    this.#slabs = [];
    this.#cursor = SLAB_BYTES;
    this.#liveBytes = 0;
    this.#usedBytes = 0;
    for (const [key, at] of this.#index) {
      const { text, kind } = entryAt(old, at);
      this.#index.set(key, this.#write(text, kind)); // an existing key: same place in the order
    }
  }
}

/** Byte length of the value stored at `at` (its header: length × 2 + kind). */
function entryLength(slabs: readonly Buffer[], at: number): number {
  return Math.floor(slabs[Math.floor(at / SLAB_BYTES)]!.readUInt32LE(at % SLAB_BYTES) / 2);
}

function entryAt(slabs: readonly Buffer[], at: number): { text: string; kind: number } {
  const slab = slabs[Math.floor(at / SLAB_BYTES)]!;
  const start = (at % SLAB_BYTES) + HEADER_BYTES;
  const header = slab.readUInt32LE(start - HEADER_BYTES);
  return { text: slab.toString('utf8', start, start + Math.floor(header / 2)), kind: header % 2 };
}

/** 1 MiB slabs: few enough objects, little waste at the end of each. */
const SLAB_BYTES = 1 << 20;
/** Entry positions stay below 2^31 (small integers for V8) up to 2 GiB of slabs. */
const MAX_SLABS = 2048;
/** Each entry starts with a UInt32: byte length × 2 + kind. */
const HEADER_BYTES = 4;
const KIND_TEXT = 0;
const KIND_JSON = 1;
