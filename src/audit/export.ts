import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, open, rename, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { nodeAuditFs } from './fs.js';
import { exportMarkerPath } from './retention.js';
import { listSegments } from './segments.js';
import { exists } from './fs.js';

/**
 * `pamgate audit export DEST [DIR]`: copies each rotated segment of the data dir not exported yet
 * into DEST (durably, checked byte for byte by sha256), then marks it exported with
 * `<segment>.exported` next to it, which is what retention's "until exported" waits for. The live
 * file is never exported: it is still being written. Copies in DEST keep their names, so DEST holds
 * the chain's segments in order and `pamgate audit verify DEST` checks them as one chain (from the
 * first segment on).
 */
export async function exportSegments(dataDir: string, dest: string): Promise<Array<{ segment: string; sha256: string }>> {
  await mkdir(dest, { recursive: true, mode: 0o700 });
  const done: Array<{ segment: string; sha256: string }> = [];
  for (const s of await listSegments(dataDir)) {
    const marker = exportMarkerPath(s.path);
    if (await exists(marker)) continue;
    const name = basename(s.path);
    const sha256 = await fileSha256(s.path);
    const target = join(dest, name);
    if (await exists(target)) {
      const there = await fileSha256(target);
      if (there !== sha256) throw new Error(`${target} exists and differs from ${s.path}; not overwritten`);
    } else {
      const tmp = `${target}.tmp-${process.pid}`;
      await copyFile(s.path, tmp);
      await fsyncFile(tmp);
      if ((await fileSha256(tmp)) !== sha256) throw new Error(`copy of ${s.path} to ${tmp} does not match it`);
      await rename(tmp, target);
      await nodeAuditFs.syncDir!(dest);
    }
    await writeFile(marker, JSON.stringify({ sha256, to: target, time: new Date().toISOString() }) + '\n', { mode: 0o600 });
    await fsyncFile(marker);
    done.push({ segment: name, sha256 });
  }
  if (done.length > 0) await nodeAuditFs.syncDir!(dataDir);
  return done;
}

async function fileSha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function fsyncFile(path: string): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
