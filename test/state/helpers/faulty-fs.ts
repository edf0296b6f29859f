import { nodeAuditFs, type AuditFs } from '../../../src/audit/fs.js';

/**
 * Audit fs whose writes to audit.jsonl (appends) and audit.wal fail while `failing` is set (head
 * writes are left alone). A full disk that still takes the WAL's in-place rewrites is a unit test
 * of its own (test/unit/audit.wal.test.ts).
 */
export function switchableFs(): { fs: AuditFs; fail(code: 'ENOSPC' | 'EIO' | 'EROFS' | null): void } {
  let failing: string | null = null;
  const walFds = new Set<number>();
  const error = (): Error => Object.assign(new Error(`${failing}: injected audit disk fault`), { code: failing });
  const fs: AuditFs = {
    ...nodeAuditFs,
    open: async (path, flags, mode) => {
      const fd = await nodeAuditFs.open(path, flags, mode);
      if (path.endsWith('audit.wal')) walFds.add(fd);
      return fd;
    },
    write: async (fd, buf, off, len, pos) => {
      if ((pos === null || walFds.has(fd)) && failing) {
        // EIO from an O_DSYNC write: the bytes reached the page cache but not the disk.
        if (failing === 'EIO') await nodeAuditFs.write(fd, buf, off, len, pos);
        throw error();
      }
      return nodeAuditFs.write(fd, buf, off, len, pos);
    },
    fdatasync: async (fd) => {
      if (failing === 'EIO') throw error();
      return nodeAuditFs.fdatasync(fd);
    },
  };
  return { fs, fail: (code) => (failing = code) };
}
