import { EventEmitter } from 'node:events';
import { createReadStream } from 'node:fs';
import { open, rename, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { createInterface } from 'node:readline';
import type { KeyvStoreAdapter } from 'keyv';
import { PackedMap } from './packed-map.js';

type JournalLine = { k: string; v: unknown } | { k: string; d: 1 } | { clear: 1 };

export interface JournalOptions {
  /**
   * Garbage (bytes of overwritten and deleted entries) the journal may hold beyond its live data
   * before it is compacted while running (default 1 MiB). The file stays within twice its live
   * data plus this.
   */
  compactGarbageBytes?: number;
}

const DEFAULT_COMPACT_GARBAGE_BYTES = 1 << 20;

/**
 * The embedded keyv store: an in-memory map backed by an append-only journal that is
 * fdatasync'ed before every write resolves, and compacted on open and whenever its garbage
 * outweighs its live data (and `compactGarbageBytes`). No native module, no server, survives
 * restarts; a torn last line (crash mid-write) was never acknowledged and is dropped. The values
 * (keyv's serialised strings) are held off the V8 heap, in a PackedMap: with 100,000 grants their
 * copies were 28 % of the heap the state took (docs/design/006-state-off-the-heap.md).
 */
export class JournalStore extends EventEmitter implements KeyvStoreAdapter {
  opts: Record<string, unknown> = { dialect: 'journal' };
  namespace?: string;
  private tail: Promise<void> = Promise.resolve();
  /** After a failed write, part of a line may be on disk: start the next one on a fresh line. */
  private torn = false;
  /** Set when the journal file could not be reopened after a compaction: every write fails from then on. */
  private broken: Error | null = null;
  /** Bytes the live entries take as journal lines: what a compaction would write. */
  private liveBytes: number;
  /** Bytes in the journal file (counting a failed write's attempt as written). */
  private fileBytes: number;
  /** After a failed compaction: the file size at which to try again. */
  private retryCompactAt = 0;
  private readonly compactGarbageBytes: number;

  private constructor(
    private readonly file: string,
    private fh: FileHandle,
    private readonly data: PackedMap,
    size: number,
    opts: JournalOptions,
  ) {
    super();
    this.liveBytes = size;
    this.fileBytes = size;
    this.compactGarbageBytes = opts.compactGarbageBytes ?? DEFAULT_COMPACT_GARBAGE_BYTES;
  }

  static async open(file: string, opts: JournalOptions = {}): Promise<JournalStore> {
    const data = await replay(file);
    const size = await compact(file, data);
    return new JournalStore(file, await open(file, 'a'), data, size, opts);
  }

  async get<Value>(key: string): Promise<Value | undefined> {
    return this.data.get(key) as Value | undefined;
  }

  async set(key: string, value: unknown): Promise<boolean> {
    if (Buffer.isBuffer(value)) throw new TypeError('journal store values must be JSON values, not Buffers');
    if (value === undefined || typeof value === 'function' || typeof value === 'symbol') throw new TypeError(`value for key ${JSON.stringify(key)} is not a JSON value`);
    const line = lineOf(key, value);
    await this.append(line, () => {
      this.liveBytes += Buffer.byteLength(line) - this.bytesOf(key);
      this.data.set(key, value);
    });
    return true;
  }

  async delete(key: string): Promise<boolean> {
    return (await this.deleteEach([key])) > 0;
  }

  /** Deletes every key of `keys` that is stored, with one write and one fdatasync; the number deleted. */
  async deleteEach(keys: readonly string[]): Promise<number> {
    const present = keys.filter((k) => this.data.has(k));
    if (present.length === 0) return 0;
    let deleted = 0;
    await this.append(present.map((k) => JSON.stringify({ k, d: 1 }) + '\n').join(''), () => {
      for (const k of present) {
        if (!this.data.has(k)) continue;
        this.liveBytes -= this.bytesOf(k);
        this.data.delete(k);
        deleted++;
      }
    });
    return deleted;
  }

  async clear(): Promise<void> {
    await this.append(JSON.stringify({ clear: 1 }) + '\n', () => {
      this.liveBytes = 0;
      this.data.clear();
    });
  }

  /** Every stored key that starts with `prefix`. */
  *keys(prefix = ''): Generator<string> {
    for (const key of this.data.keys()) if (key.startsWith(prefix)) yield key;
  }

  /** False once the journal can take no more writes (its file could not be reopened after a compaction). */
  usable(): boolean {
    return this.broken === null;
  }

  /** Bytes in the journal file and bytes of its live entries (diagnostics, tests). */
  sizes(): { file: number; live: number } {
    return { file: this.fileBytes, live: this.liveBytes };
  }

  async disconnect(): Promise<void> {
    await this.tail;
    await this.fh.close();
  }

  /** The journal line `key` has now, in bytes (0 if absent). */
  private bytesOf(key: string): number {
    const value = this.data.get(key);
    return value === undefined ? 0 : Buffer.byteLength(lineOf(key, value));
  }

  /**
   * Writes `text` (whole lines) after every earlier write, fdatasyncs, then applies the change to
   * the map: the map never holds what the file does not. A compaction that is due runs next in
   * the same queue, so it sees the map and the file agree; the write that made it due does not
   * wait for it, the writes after it do.
   */
  private append(text: string, apply: () => void): Promise<void> {
    const done = this.tail.then(async () => {
      if (this.broken) throw this.broken;
      const bytes = this.torn ? '\n' + text : text;
      this.fileBytes += Buffer.byteLength(bytes);
      try {
        await this.fh.write(bytes);
        await this.fh.datasync();
        this.torn = false;
      } catch (err) {
        this.torn = true;
        throw err;
      }
      apply();
    });
    this.tail = done.then(() => this.compactIfWasteful()).catch(() => undefined);
    return done;
  }

  private async compactIfWasteful(): Promise<void> {
    const garbage = this.fileBytes - this.liveBytes;
    if (garbage <= Math.max(this.liveBytes, this.compactGarbageBytes) || this.fileBytes < this.retryCompactAt) return;
    try {
      this.liveBytes = await compact(this.file, this.data);
    } catch {
      // The journal is intact (the rename is the only step that touches it); try again after as much more garbage.
      this.retryCompactAt = this.fileBytes + this.compactGarbageBytes;
      return;
    }
    this.fileBytes = this.liveBytes;
    this.torn = false;
    // The old handle points at the replaced file: appending there would be lost. Without a new one, refuse every write.
    const old = this.fh;
    try {
      this.fh = await open(this.file, 'a');
    } catch (err) {
      this.broken = new Error(`state journal could not be reopened after compaction: ${(err as Error).message}`);
    }
    await old.close().catch(() => undefined);
  }
}

function lineOf(key: string, value: unknown): string {
  return JSON.stringify({ k: key, v: value }) + '\n';
}

/**
 * Reads the journal line by line (a stream, never the whole file as one string: a journal can be
 * larger than the longest string V8 can hold) and applies each line in order.
 */
async function replay(file: string): Promise<PackedMap> {
  const data = new PackedMap();
  const stream = createReadStream(file, { encoding: 'utf8' });
  const opened = new Promise<boolean>((resolve, reject) => {
    stream.once('open', () => resolve(true));
    stream.once('error', (err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? resolve(false) : reject(err)));
  });
  if (!(await opened)) return data;
  const lines = createInterface({ input: stream, crlfDelay: Infinity });
  for await (const line of lines) {
    if (line === '') continue;
    let entry: JournalLine;
    try {
      entry = JSON.parse(line) as JournalLine;
    } catch {
      continue; // torn tail from a crash: never acknowledged
    }
    if ('clear' in entry) data.clear();
    else if ('d' in entry) data.delete(entry.k);
    else data.set(entry.k, entry.v);
  }
  return data;
}

/** Bytes gathered before each write while compacting: bounded memory, few syscalls. */
const COMPACT_CHUNK = 1 << 20;

/**
 * Rewrites the journal as one line per live key: written in chunks to a temp file, fsync'ed,
 * renamed over the journal, and the directory fsync'ed so the rename itself survives power loss.
 * A crash at any point leaves either the old journal or the new one whole. Returns the bytes written.
 */
async function compact(file: string, data: PackedMap): Promise<number> {
  const tmp = `${file}.tmp`;
  const fh = await open(tmp, 'w');
  let written = 0;
  try {
    let chunk: string[] = [];
    let size = 0;
    for (const [k, v] of data.entries()) {
      const line = lineOf(k, v);
      chunk.push(line);
      size += line.length;
      written += Buffer.byteLength(line);
      if (size >= COMPACT_CHUNK) {
        await fh.writeFile(chunk.join('')); // writeFile: loops until every byte is written
        chunk = [];
        size = 0;
      }
    }
    if (chunk.length > 0) await fh.writeFile(chunk.join(''));
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  await syncDir(dirname(file));
  return written;
}

/** fsync a directory, making a rename or create in it durable. */
export async function syncDir(dir: string): Promise<void> {
  const dh = await open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}
