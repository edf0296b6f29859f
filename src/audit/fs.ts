import * as nodeFs from 'node:fs';

/**
 * The file primitives the writer uses, as promises over raw fds. Injectable so tests can make
 * write/sync/truncate fail; production uses {@link nodeAuditFs}. On Linux audit.wal is opened
 * O_DSYNC, so a failing write is also how a failing sync shows; fdatasync syncs audit.jsonl at
 * checkpoints and after a cut-back, and audit.wal after every batch elsewhere.
 */
export interface AuditFs {
  open(path: string, flags: string | number, mode: number): Promise<number>;
  /** Like fs.write: returns bytes written; `position` null appends (fd opened O_APPEND). */
  write(fd: number, buffer: Buffer, offset: number, length: number, position: number | null): Promise<number>;
  fdatasync(fd: number): Promise<void>;
  ftruncate(fd: number, length: number): Promise<void>;
  close(fd: number): Promise<void>;
  /** Segment rotation; optional so older fakes keep working (node:fs is used when absent). */
  rename?(from: string, to: string): Promise<void>;
  /** fsync of a directory, making a rename or a create durable. */
  syncDir?(dir: string): Promise<void>;
}

function done(resolve: () => void, reject: (err: Error) => void): (err: Error | null) => void {
  return (err) => (err ? reject(err) : resolve());
}

/** Callback fs wrapped in promises: never blocks the event loop, no FileHandle objects. */
export const nodeAuditFs: AuditFs = Object.freeze({
  open: (path: string, flags: string | number, mode: number): Promise<number> =>
    new Promise<number>((resolve, reject) =>
      nodeFs.open(path, flags, mode, (err, fd) => (err ? reject(err) : resolve(fd))),
    ),
  write: (fd: number, buffer: Buffer, offset: number, length: number, position: number | null): Promise<number> =>
    new Promise<number>((resolve, reject) =>
      nodeFs.write(fd, buffer, offset, length, position, (err, written) => (err ? reject(err) : resolve(written))),
    ),
  fdatasync: (fd: number): Promise<void> =>
    new Promise<void>((resolve, reject) => nodeFs.fdatasync(fd, done(resolve, reject))),
  ftruncate: (fd: number, length: number): Promise<void> =>
    new Promise<void>((resolve, reject) => nodeFs.ftruncate(fd, length, done(resolve, reject))),
  close: (fd: number): Promise<void> =>
    new Promise<void>((resolve, reject) => nodeFs.close(fd, done(resolve, reject))),
  rename: (from: string, to: string): Promise<void> =>
    new Promise<void>((resolve, reject) => nodeFs.rename(from, to, done(resolve, reject))),
  syncDir: (dir: string): Promise<void> =>
    new Promise<void>((resolve, reject) =>
      nodeFs.open(dir, 'r', (err, fd) => {
        if (err) return reject(err);
        nodeFs.fsync(fd, (syncErr) => nodeFs.close(fd, () => (syncErr ? reject(syncErr) : resolve())));
      }),
    ),
});

/** Whether a file is there (any error, including no permission to look, counts as not). */
export async function exists(path: string): Promise<boolean> {
  try {
    await nodeFs.promises.access(path);
    return true;
  } catch {
    return false;
  }
}
