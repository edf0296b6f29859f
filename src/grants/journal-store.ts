import { EventEmitter } from 'node:events';
import { createReadStream } from 'node:fs';
import { open, rename, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { createInterface } from 'node:readline';
import type { KeyvStoreAdapter } from 'keyv';
import { PackedMap } from './packed-map.js';

type JournalLine = { k: string; v: unknown } | { k: string; d: 1 } | { clear: 1 };

/**
 * The embedded keyv store: an in-memory map backed by an append-only journal that is
 * fdatasync'ed before every write resolves, and compacted on open. No native module,
 * no server, survives restarts; a torn last line (crash mid-write) was never
 * acknowledged and is dropped. The values (keyv's serialised strings) are held off the V8 heap,
 * in a PackedMap: with 100,000 grants their copies were 28 % of the heap the state took
 * (docs/design/006-state-off-the-heap.md).
 */
export class JournalStore extends EventEmitter implements KeyvStoreAdapter {
  opts: Record<string, unknown> = { dialect: 'journal' };
  namespace?: string;
  private tail: Promise<void> = Promise.resolve();
  /** After a failed write, part of a line may be on disk: start the next one on a fresh line. */
  private torn = false;

  private constructor(
    private readonly file: string,
    private fh: FileHandle,
    private readonly data: PackedMap,
  ) {
    super();
  }

  static async open(file: string): Promise<JournalStore> {
    const data = await replay(file);
    await compact(file, data);
    return new JournalStore(file, await open(file, 'a'), data);
  }

  async get<Value>(key: string): Promise<Value | undefined> {
    return this.data.get(key) as Value | undefined;
  }

  async set(key: string, value: unknown): Promise<boolean> {
    if (Buffer.isBuffer(value)) throw new TypeError('journal store values must be JSON values, not Buffers');
    if (value === undefined || typeof value === 'function' || typeof value === 'symbol') throw new TypeError(`value for key ${JSON.stringify(key)} is not a JSON value`);
    await this.append({ k: key, v: value });
    this.data.set(key, value);
    return true;
  }

  async delete(key: string): Promise<boolean> {
    const had = this.data.has(key);
    if (had) await this.append({ k: key, d: 1 });
    this.data.delete(key);
    return had;
  }

  async clear(): Promise<void> {
    await this.append({ clear: 1 });
    this.data.clear();
  }

  /** Every stored key that starts with `prefix`. */
  *keys(prefix = ''): Generator<string> {
    for (const key of this.data.keys()) if (key.startsWith(prefix)) yield key;
  }

  async disconnect(): Promise<void> {
    await this.tail;
    await this.fh.close();
  }

  private append(line: JournalLine): Promise<void> {
    const bytes = JSON.stringify(line) + '\n';
    const done = this.tail.then(async () => {
      try {
        await this.fh.write(this.torn ? '\n' + bytes : bytes);
        await this.fh.datasync();
        this.torn = false;
      } catch (err) {
        this.torn = true;
        throw err;
      }
    });
    this.tail = done.catch(() => undefined);
    return done;
  }
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
 */
async function compact(file: string, data: PackedMap): Promise<void> {
  const tmp = `${file}.tmp`;
  const fh = await open(tmp, 'w');
  try {
    let chunk: string[] = [];
    let size = 0;
    for (const [k, v] of data.entries()) {
      const line = JSON.stringify({ k, v }) + '\n';
      chunk.push(line);
      size += line.length;
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
