import { createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import type { Logger } from 'pino';

export interface PolicyWatch {
  /** The file's current bytes were just loaded by someone else (SIGHUP): do not reload them again. */
  seen(): Promise<void>;
  close(): void;
}

/**
 * Calls `reload` when the policy file's content changes. Watches the directory rather than the
 * file, because editors and config managers replace files by rename (a watch on the old inode
 * would go quiet), debounces bursts of events into one reload, and skips events that leave the
 * bytes unchanged (the data dir's own writes, touch).
 */
export async function watchPolicyFile(file: string, reload: () => Promise<unknown>, log: Logger, debounceMs = 150): Promise<PolicyWatch> {
  const name = basename(file);
  let lastDigest = await digest(file);
  let timer: NodeJS.Timeout | null = null;
  let closed = false;

  const check = async (): Promise<void> => {
    const now = await digest(file);
    if (closed || now === null || now === lastDigest) return; // a missing file mid-rename: wait for the next event
    log.info({ file }, 'policy file changed; reloading');
    await reload();
  };

  let watcher: FSWatcher;
  try {
    watcher = watch(dirname(file), { persistent: false }, (_event, changed) => {
      if (changed !== null && changed !== name) return;
      if (timer) clearTimeout(timer);
      timer = setTimeout(() => {
        timer = null;
        check().catch((err: unknown) => log.error({ err }, 'policy reload after file change failed'));
      }, debounceMs);
    });
  } catch (err) {
    log.warn({ err, file }, 'cannot watch the policy file; reload with SIGHUP');
    return { seen: async () => undefined, close: () => undefined };
  }
  watcher.on('error', (err) => log.warn({ err, file }, 'policy file watch failed; reload with SIGHUP'));
  return {
    async seen() {
      lastDigest = (await digest(file)) ?? lastDigest;
    },
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
      watcher.close();
    },
  };
}

async function digest(file: string): Promise<string | null> {
  try {
    return createHash('sha256').update(await readFile(file)).digest('hex');
  } catch {
    return null;
  }
}
