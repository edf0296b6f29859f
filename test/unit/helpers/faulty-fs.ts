import { nodeAuditFs, type AuditFs } from '../../../src/audit/fs.js';
import { namedFs } from './named-fs.js';

/** node:fs for the audit writer with switchable faults, by file (fds are told apart by the path they were opened with). */
export interface Faults {
  /** Fail writes to audit.wal (after writing this much of them). */
  wal: null | 'outright' | 'half' | 'all';
  /** Fail fdatasync of audit.jsonl. */
  liveSync: boolean;
  /** Fail appends to audit.jsonl (while the WAL write of the same batch succeeds). */
  liveAppend: boolean;
  /** Fail every ftruncate (the cut-back after a refused batch). */
  truncate: boolean;
}

export function faultyFs(): { fs: AuditFs; faults: Faults } {
  const faults: Faults = { wal: null, liveSync: false, liveAppend: false, truncate: false };
  const { fs: named, fileOf } = namedFs(nodeAuditFs);
  const eio = (what: string): Error => Object.assign(new Error(`EIO: ${what}`), { code: 'EIO' });
  const fs: AuditFs = {
    ...named,
    write: async (fd, buf, off, len, pos) => {
      if (fileOf(fd) === 'audit.wal' && faults.wal !== null && len > 1) {
        if (faults.wal !== 'outright') await nodeAuditFs.write(fd, buf, off, faults.wal === 'all' ? len : Math.floor(len / 2), pos);
        throw eio('wal write');
      }
      if (fileOf(fd) === 'audit.jsonl' && pos === null && faults.liveAppend) throw Object.assign(new Error('ENOSPC: live append'), { code: 'ENOSPC' });
      return nodeAuditFs.write(fd, buf, off, len, pos);
    },
    ftruncate: async (fd, length) => {
      if (faults.truncate) throw eio('ftruncate');
      return nodeAuditFs.ftruncate(fd, length);
    },
    fdatasync: async (fd) => {
      if (fileOf(fd) === 'audit.jsonl' && faults.liveSync) throw eio('live fdatasync');
      return nodeAuditFs.fdatasync(fd);
    },
  };
  return { fs, faults };
}

