import { nodeAuditFs, type AuditFs } from '../../../src/audit/fs.js';

/** Audit fs whose appends to the audit file fail while `failing` is set (head writes are left alone). */
export function switchableFs(): { fs: AuditFs; fail(code: 'ENOSPC' | 'EIO' | 'EROFS' | null): void } {
  let failing: string | null = null;
  const error = (): Error => Object.assign(new Error(`${failing}: injected audit disk fault`), { code: failing });
  const fs: AuditFs = {
    ...nodeAuditFs,
    write: async (fd, buf, off, len, pos) => {
      if (pos === null && failing) {
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
