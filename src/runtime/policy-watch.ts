import { createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from 'pino';

export interface PolicyWatch {
  /** The file's current bytes were just loaded by someone else (SIGHUP): do not reload them again. */
  seen(): Promise<void>;
  close(): void;
}

export interface PolicyWatchOptions {
  /** Quiet time after the last event before the file is read (bursts of events give one read). */
  debounceMs?: number;
  /** A steady stream of events (e.g. an audit file in the same dir) still gets a read this often. */
  maxWaitMs?: number;
  /** Backstop: the file is also read this often, whatever the watch reports (0: never). */
  pollMs?: number;
}

export const DEFAULT_POLICY_POLL_MS = 5_000;

/**
 * Calls `reload` when the policy file's content changes. Watches the directory rather than the
 * file, and reacts to *any* event there rather than to events naming the file: editors and config
 * managers replace the file by rename (a watch on the old inode would go quiet), and a Kubernetes
 * ConfigMap volume never touches `policies.yaml` itself (a symlink into `..data/`) but swaps the
 * `..data` symlink to a new timestamped directory. Events are debounced into one read; the read
 * compares a digest of the file's bytes (through symlinks) with the last loaded one, so events
 * that leave them unchanged (the data dir's own writes, touch) cost one read and nothing else. As
 * fs.watch is not reliable everywhere (network filesystems, some container mounts, a symlink to a
 * file in another directory), the file is also read every `pollMs`.
 */
export async function watchPolicyFile(file: string, reload: () => Promise<unknown>, log: Logger, opts: PolicyWatchOptions = {}): Promise<PolicyWatch> {
  const debounceMs = opts.debounceMs ?? 150;
  const maxWaitMs = opts.maxWaitMs ?? 1_000;
  const pollMs = opts.pollMs ?? DEFAULT_POLICY_POLL_MS;
  let lastDigest = await digest(file);
  let timer: NodeJS.Timeout | null = null;
  let firstEventAt = 0;
  let closed = false;

  // One check at a time: a poll and an event arriving together must not both reload the same bytes.
  let checking: Promise<void> = Promise.resolve();
  const check = (why: 'change' | 'poll'): Promise<void> => {
    const next = checking.then(async () => {
      const now = await digest(file);
      if (closed || now === null || now === lastDigest) return; // a missing file mid-swap: wait for the next event
      log.info({ file, trigger: why }, 'policy file changed; reloading');
      await reload(); // calls seen(), which records the digest it loads
    });
    checking = next.catch((err: unknown) => log.error({ err }, 'policy reload after file change failed'));
    return checking;
  };

  const onEvent = (): void => {
    if (closed) return;
    const now = Date.now();
    if (timer) {
      clearTimeout(timer);
    } else {
      firstEventAt = now;
    }
    const wait = Math.max(0, Math.min(debounceMs, firstEventAt + maxWaitMs - now));
    timer = setTimeout(() => {
      timer = null;
      void check('change');
    }, wait);
  };

  let watcher: FSWatcher | null = null;
  try {
    watcher = watch(dirname(file), { persistent: false }, onEvent);
    watcher.on('error', (err) => log.warn({ err, file }, `policy file watch failed; relying on the ${pollMs} ms poll and SIGHUP`));
  } catch (err) {
    log.warn({ err, file }, `cannot watch the policy file's directory; relying on the ${pollMs} ms poll and SIGHUP`);
  }
  const poller = pollMs > 0 ? setInterval(() => void check('poll'), pollMs) : null;
  poller?.unref();

  return {
    async seen() {
      lastDigest = (await digest(file)) ?? lastDigest;
    },
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
      if (poller) clearInterval(poller);
      watcher?.close();
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
