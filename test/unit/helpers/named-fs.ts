import type { AuditFs } from '../../../src/audit/fs.js';

/** `base` with its opens recorded, so a wrapper can tell fds apart by file name ('' for an fd it never saw open). */
export function namedFs(base: AuditFs): { fs: AuditFs; fileOf(fd: number): string } {
  const names = new Map<number, string>();
  const fs: AuditFs = {
    ...base,
    open: async (path, flags, mode) => {
      const fd = await base.open(path, flags, mode);
      names.set(fd, path.split('/').at(-1)!);
      return fd;
    },
  };
  return { fs, fileOf: (fd) => names.get(fd) ?? '' };
}
