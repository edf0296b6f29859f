import { EventEmitter } from 'node:events';
import { open, readFile, rename, type FileHandle } from 'node:fs/promises';
import type { KeyvStoreAdapter } from 'keyv';

type JournalLine = { k: string; v: unknown } | { k: string; d: 1 } | { clear: 1 };

/**
 * The embedded keyv store: an in-memory map backed by an append-only journal that is
 * fdatasync'ed before every write resolves, and compacted on open. No native module,
 * no server, survives restarts; a torn last line (crash mid-write) was never
 * acknowledged and is dropped.
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
    private readonly data: Map<string, unknown>,
  ) {
    super();
  }

  static async open(file: string): Promise<JournalStore> {
    const data = new Map<string, unknown>();
    let text = '';
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    for (const line of text.split('\n')) {
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
    await compact(file, data);
    return new JournalStore(file, await open(file, 'a'), data);
  }

  async get<Value>(key: string): Promise<Value | undefined> {
    return this.data.get(key) as Value | undefined;
  }

  async set(key: string, value: unknown): Promise<boolean> {
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

  /** Every stored [key, value] whose key starts with `prefix`. */
  *entries(prefix = ''): Generator<[string, unknown]> {
    for (const entry of this.data) if (entry[0].startsWith(prefix)) yield entry;
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

async function compact(file: string, data: Map<string, unknown>): Promise<void> {
  const tmp = `${file}.tmp`;
  const fh = await open(tmp, 'w');
  try {
    let out = '';
    for (const [k, v] of data) out += JSON.stringify({ k, v }) + '\n';
    await fh.write(out);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
}
