import { getRandomValues } from 'node:crypto';

/**
 * A Map from string keys to JSON values held entirely outside the V8 heap: keys and values packed
 * into a few large slabs, the index in typed arrays. On the heap stay a handful of objects,
 * however many entries there are.
 *
 * Why: the state holds every request ever made. V8 pays for a large heap on every proxied
 * request: each young-generation GC costs more, and after the gateway idles one or two full GCs
 * of the whole heap run at the start of load, their marking sharing the proxy's CPU
 * (docs/design/006-state-off-the-heap.md). Per-value Buffers would leave two objects per value on
 * the heap, and slabs with a `Map` index a key string and a hash-table slot per entry, 100,000 of
 * each per index; this leaves none.
 *
 * A string is stored as its UTF-8 bytes; anything else (and a string with a lone surrogate, which
 * UTF-8 cannot carry) as its JSON text, which escapes it. Keys are stored the same way. `get`
 * parses a fresh copy every time: callers may change what they get without touching what is
 * stored. Iteration is in insertion order, as a Map's.
 *
 * A replaced or deleted entry leaves its bytes behind as garbage. Once the garbage outweighs the
 * live bytes (and a slab's worth), the live entries are copied into new slabs in one pass: a pause
 * proportional to the live bytes, at most once per as many bytes written since the last one.
 */
export class PackedMap<V = unknown> {
  #slabs: Buffer[] = [];
  /** Write position in the last slab. */
  #cursor = SLAB_BYTES;
  /** Bytes of the live entries, headers included. */
  #liveBytes = 0;
  /** Bytes of every slab handed out (live entries, garbage, unused slab tails). */
  #usedBytes = 0;

  /** Per slot, in insertion order: where its entry starts (slab × SLAB_BYTES + offset), or DELETED. */
  #positions = new Int32Array(INITIAL_SLOTS);
  /** Per slot: its key's hash. */
  #hashes = new Int32Array(INITIAL_SLOTS);
  /** Slots handed out, deleted ones included. */
  #slots = 0;
  #size = 0;
  /** Open addressing over slots: slot + 1, EMPTY, or TOMBSTONE (a deleted key: probing goes on past it). */
  #table = new Int32Array(INITIAL_SLOTS * 2);
  /** Table cells not EMPTY. */
  #tableFilled = 0;
  /** A random seed, so that which keys collide cannot be worked out in advance. */
  readonly #seed = getRandomValues(new Int32Array(1))[0]!;
  /** Bumped whenever slots are renumbered (compaction): an iteration in progress must not go on. */
  #generation = 0;

  get size(): number {
    return this.#size;
  }

  has(key: string): boolean {
    return this.#find(key) >= 0;
  }

  get(key: string): V | undefined {
    const cell = this.#find(key);
    if (cell < 0) return undefined;
    return this.#valueAt(this.#positions[this.#table[cell]! - 1]!) as V;
  }

  /** Throws (and stores nothing) for a value that has no JSON text: undefined, a function, a symbol. */
  set(key: string, value: V): this {
    const [text, kind] = encode(value);
    if (typeof text !== 'string') throw new TypeError(`value for key ${JSON.stringify(key)} is not a JSON value`);
    const cell = this.#find(key);
    const at = this.#write(key, text, kind);
    if (cell >= 0) {
      const slot = this.#table[cell]! - 1;
      this.#drop(this.#positions[slot]!);
      this.#positions[slot] = at;
    } else {
      this.#add(key, at);
    }
    this.#compactIfWasteful();
    return this;
  }

  delete(key: string): boolean {
    const cell = this.#find(key);
    if (cell < 0) return false;
    const slot = this.#table[cell]! - 1;
    this.#drop(this.#positions[slot]!);
    this.#positions[slot] = DELETED;
    this.#table[cell] = TOMBSTONE;
    this.#size--;
    this.#compactIfWasteful();
    return true;
  }

  clear(): void {
    this.#slabs = [];
    this.#cursor = SLAB_BYTES;
    this.#liveBytes = 0;
    this.#usedBytes = 0;
    this.#positions = new Int32Array(INITIAL_SLOTS);
    this.#hashes = new Int32Array(INITIAL_SLOTS);
    this.#slots = 0;
    this.#size = 0;
    this.#table = new Int32Array(INITIAL_SLOTS * 2);
    this.#tableFilled = 0;
    this.#generation++;
  }

  *keys(): Generator<string> {
    for (const at of this.#live()) yield this.#keyAt(at);
  }

  *values(): Generator<V> {
    for (const at of this.#live()) yield this.#valueAt(at) as V;
  }

  *entries(): Generator<[string, V]> {
    for (const at of this.#live()) yield [this.#keyAt(at), this.#valueAt(at) as V];
  }

  /** Bytes held off the heap (slabs), and how many of them are live entries: for tests and diagnostics. */
  bytes(): { held: number; live: number } {
    return { held: this.#usedBytes, live: this.#liveBytes };
  }

  /** Copies every live entry into fresh slabs and renumbers the slots densely, in the same order. */
  compact(): void {
    const old = this.#slabs;
    const positions = this.#positions;
    const live = this.#size;
    this.#slabs = [];
    this.#cursor = SLAB_BYTES;
    this.#liveBytes = 0;
    this.#usedBytes = 0;
    const capacity = Math.max(INITIAL_SLOTS, nextPowerOfTwo(live * 2));
    const nextPositions = new Int32Array(capacity);
    const nextHashes = new Int32Array(capacity);
    let n = 0;
    for (let slot = 0; slot < this.#slots; slot++) {
      const at = positions[slot]!;
      if (at === DELETED) continue;
      nextPositions[n] = this.#copy(old, at);
      nextHashes[n] = this.#hashes[slot]!;
      n++;
    }
    this.#positions = nextPositions;
    this.#hashes = nextHashes;
    this.#slots = n;
    this.#generation++;
    this.#rebuildTable(Math.max(INITIAL_SLOTS * 2, nextPowerOfTwo(live * 4)));
  }

  /** Positions of the live entries in slot order; throws if the map is compacted meanwhile. */
  *#live(): Generator<number> {
    const generation = this.#generation;
    for (let slot = 0; slot < this.#slots; slot++) {
      if (this.#generation !== generation) throw new Error('PackedMap: compacted while being iterated');
      const at = this.#positions[slot]!;
      if (at !== DELETED) yield at;
    }
  }

  /** The table cell holding `key`, or -1. */
  #find(key: string): number {
    const hash = hashOf(key, this.#seed);
    const mask = this.#table.length - 1;
    for (let cell = hash & mask; ; cell = (cell + 1) & mask) {
      const entry = this.#table[cell]!;
      if (entry === EMPTY) return -1;
      if (entry !== TOMBSTONE && this.#hashes[entry - 1] === hash && this.#keyIs(this.#positions[entry - 1]!, key)) return cell;
    }
  }

  #add(key: string, at: number): void {
    if (this.#slots === this.#positions.length) {
      this.#positions = grown(this.#positions);
      this.#hashes = grown(this.#hashes);
    }
    // At most half full, tombstones counted: probes stay short and always end at an EMPTY cell.
    if ((this.#tableFilled + 1) * 2 > this.#table.length) this.#rebuildTable(Math.max(this.#table.length, nextPowerOfTwo((this.#size + 1) * 4)));
    const slot = this.#slots++;
    const hash = hashOf(key, this.#seed);
    this.#positions[slot] = at;
    this.#hashes[slot] = hash;
    this.#place(slot, hash);
    this.#tableFilled++;
    this.#size++;
  }

  #rebuildTable(cells: number): void {
    this.#table = new Int32Array(cells);
    for (let slot = 0; slot < this.#slots; slot++) if (this.#positions[slot] !== DELETED) this.#place(slot, this.#hashes[slot]!);
    this.#tableFilled = this.#size;
  }

  #place(slot: number, hash: number): void {
    const mask = this.#table.length - 1;
    let cell = hash & mask;
    while (this.#table[cell] !== EMPTY) cell = (cell + 1) & mask;
    this.#table[cell] = slot + 1;
  }

  /** Appends one entry (header, key, value) to the slabs; returns where it starts. */
  #write(key: string, text: string, kind: number): number {
    const [keyText, keyKind] = encode(key) as [string, number];
    const keyLength = Buffer.byteLength(keyText, 'utf8');
    const length = Buffer.byteLength(text, 'utf8');
    const { slab, offset, at } = this.#reserve(HEADER_BYTES + keyLength + length);
    slab.writeUInt32LE(keyLength * 2 + keyKind, offset);
    slab.writeUInt32LE(length * 2 + kind, offset + 4);
    slab.write(keyText, offset + HEADER_BYTES, keyLength, 'utf8');
    slab.write(text, offset + HEADER_BYTES + keyLength, length, 'utf8');
    return at;
  }

  /** Copies the entry at `at` in `slabs` (the old ones, during compaction), byte for byte, to the end of the current ones. */
  #copy(slabs: readonly Buffer[], at: number): number {
    const from = slabs[Math.floor(at / SLAB_BYTES)]!;
    const start = at % SLAB_BYTES;
    const end = entryAt(slabs, at).end;
    const { slab, offset, at: to } = this.#reserve(end - start);
    from.copy(slab, offset, start, end);
    return to;
  }

  /** Room for `size` bytes at the end of the slabs: a new slab when the last one lacks it. */
  #reserve(size: number): { slab: Buffer; offset: number; at: number } {
    if (size > SLAB_BYTES - this.#cursor) {
      if (this.#slabs.length >= MAX_SLABS) throw new RangeError('PackedMap: more than 2 GiB of entries');
      // Not Buffer.alloc: zeroing is wasted (only written ranges are ever read). An entry larger
      // than a slab gets a slab of its own.
      this.#slabs.push(Buffer.allocUnsafeSlow(Math.max(SLAB_BYTES, size)));
      this.#usedBytes += SLAB_BYTES - this.#cursor; // the previous slab's unused tail: garbage
      this.#cursor = 0;
    }
    const n = this.#slabs.length - 1;
    const offset = this.#cursor;
    // A slab of its own is full: the next entry starts a new one.
    this.#cursor = size > SLAB_BYTES ? SLAB_BYTES : offset + size;
    this.#usedBytes += size;
    this.#liveBytes += size;
    return { slab: this.#slabs[n]!, offset, at: n * SLAB_BYTES + offset };
  }

  /** Whether the entry at `at` has `key`: an ASCII key compared byte by byte, any other decoded. */
  #keyIs(at: number, key: string): boolean {
    const e = entryAt(this.#slabs, at);
    const slab = this.#slabs[Math.floor(at / SLAB_BYTES)]!;
    if (e.keyKind === KIND_TEXT && e.valueStart - e.keyStart === key.length) {
      let i = 0;
      for (; i < key.length; i++) {
        const byte = slab[e.keyStart + i]!;
        if (byte >= 0x80) break; // not ASCII: the byte count says nothing about the characters
        if (byte !== key.charCodeAt(i)) return false;
      }
      if (i === key.length) return true;
    }
    return this.#keyAt(at) === key;
  }

  #keyAt(at: number): string {
    const e = entryAt(this.#slabs, at);
    const text = this.#slabs[Math.floor(at / SLAB_BYTES)]!.toString('utf8', e.keyStart, e.valueStart);
    return e.keyKind === KIND_JSON ? (JSON.parse(text) as string) : text;
  }

  #valueAt(at: number): unknown {
    const e = entryAt(this.#slabs, at);
    const text = this.#slabs[Math.floor(at / SLAB_BYTES)]!.toString('utf8', e.valueStart, e.end);
    return e.kind === KIND_JSON ? JSON.parse(text) : text;
  }

  #drop(at: number): void {
    const e = entryAt(this.#slabs, at);
    this.#liveBytes -= e.end - (at % SLAB_BYTES);
  }

  #compactIfWasteful(): void {
    const garbage = this.#usedBytes - this.#liveBytes;
    if (garbage > this.#liveBytes && garbage > SLAB_BYTES) this.compact();
  }
}

/** A value's stored text and kind: a well-formed string as itself, anything else as JSON (undefined text: no JSON form). */
function encode(value: unknown): [string | undefined, number] {
  if (typeof value === 'string' && value.isWellFormed()) return [value, KIND_TEXT];
  return [JSON.stringify(value) as string | undefined, KIND_JSON];
}

/** Where the parts of the entry at `at` lie in its slab. */
function entryAt(slabs: readonly Buffer[], at: number): { keyKind: number; kind: number; keyStart: number; valueStart: number; end: number } {
  const slab = slabs[Math.floor(at / SLAB_BYTES)]!;
  const start = at % SLAB_BYTES;
  const keyHeader = slab.readUInt32LE(start);
  const valueHeader = slab.readUInt32LE(start + 4);
  const keyStart = start + HEADER_BYTES;
  const valueStart = keyStart + Math.floor(keyHeader / 2);
  return { keyKind: keyHeader % 2, kind: valueHeader % 2, keyStart, valueStart, end: valueStart + Math.floor(valueHeader / 2) };
}

/** FNV-1a over the UTF-16 code units, from a per-map seed. */
function hashOf(key: string, seed: number): number {
  let h = seed ^ 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return h & 0x7fffffff;
}

function nextPowerOfTwo(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

function grown(source: Int32Array<ArrayBuffer>): Int32Array<ArrayBuffer> {
  const target = new Int32Array(source.length * 2);
  target.set(source);
  return target;
}

/** 1 MiB slabs: few enough objects, little waste at the end of each. */
const SLAB_BYTES = 1 << 20;
/** Entry positions stay below 2^31 (they fit an Int32Array) up to 2 GiB of slabs. */
const MAX_SLABS = 2048;
/** Each entry starts with two UInt32s, key then value: byte length × 2 + kind. */
const HEADER_BYTES = 8;
const KIND_TEXT = 0;
const KIND_JSON = 1;
const INITIAL_SLOTS = 16;
const DELETED = -1;
const EMPTY = 0;
const TOMBSTONE = -1;
