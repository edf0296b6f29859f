import { constants as fsConstants } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { nodeAuditFs, type AuditFs } from './fs.js';
import { HEAD_FILE, HEAD_SIZE, KEYED_HEAD_SIZE, encodeHead, readHead } from './head.js';
import { GENESIS, hashOfStart, lineStart, sealLine, serialiseFields } from './line.js';
import { headMac, withMac } from './mac.js';
import { planReplay, readTail, type TailState } from './recover.js';
import { LIVE_FILE, listSegments, segmentName } from './segments.js';
import { DEFAULT_WAL_BYTES, LAP_DATA, WAL_FILE, Wal, readLap, readWal, type LapBase } from './wal.js';

export type { AuditFs } from './fs.js';

export interface AuditEvent {
  type: string;
  actor?: string | null;
  task?: string | null;
  policy?: string | null;
  requestId?: string | null;
  remote?: string | null;
  [extra: string]: unknown;
}

export interface AuditLogOptions {
  /** Data dir; the file is `${dir}/audit.jsonl`. */
  dir: string;
  /** Clock in ms since epoch; default Date.now. */
  now?: () => number;
  /** File primitives, injectable for fault tests; default node:fs. */
  fs?: AuditFs;
  /** Rotate the live file into a numbered segment once it reaches this size; default 64 MiB. */
  maxBytes?: number;
  /** Called after each batch is durable with the seconds its write took (the disk's sync latency, for metrics). */
  onDurable?: (seconds: number, events: number) => void;
  /** Default: 'o_dsync' on Linux, 'fdatasync' elsewhere (see SyncMode). */
  syncMode?: SyncMode;
  /** Size of audit.wal (see wal.ts); default 16 MiB. */
  walBytes?: number;
  /** A checkpoint (audit.jsonl synced, then audit.head) runs at most this often; default 100 ms. */
  checkpointMs?: number;
  /** Called after the live file was rotated into a new segment (disk check, retention). */
  onRotated?: () => void;
  /** HMAC key of the keyed chain (mac.ts): every line and audit.head then carry a mac. */
  macKey?: Buffer | undefined;
}

export const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;

export interface AuditStats {
  events: number;
  batches: number;
  maxBatch: number;
}

const FILE_MODE = 0o600;
/**
 * How a batch is made durable in audit.wal. 'o_dsync' (Linux): the WAL is opened O_DSYNC, so a
 * write returns only once its bytes are on stable storage; a batch is one write, one threadpool
 * round trip. 'fdatasync' (elsewhere): write, then fdatasync — on macOS libuv's fdatasync is
 * F_FULLFSYNC, which flushes the drive's cache; O_DSYNC there does not.
 */
export type SyncMode = 'o_dsync' | 'fdatasync';
const DEFAULT_SYNC_MODE: SyncMode = process.platform === 'linux' ? 'o_dsync' : 'fdatasync';
/**
 * A checkpoint (fdatasync of audit.jsonl, then audit.head) runs at most this often. audit.head may
 * lag the file (never lead it), and close() flushes both.
 */
const HEAD_INTERVAL_MS = 100;
/**
 * Under load, acknowledged batches reach audit.jsonl in appends of up to this many bytes instead
 * of one append per batch: a batch's only write on its way to being acknowledged is then the WAL's,
 * and the live file's append (a thread-pool round trip) is paid once per several batches (measured
 * in docs/design/002-audit-write-ahead-log.md). The lines left go to audit.jsonl as soon as the load pauses
 * (an event-loop turn with nothing queued).
 */
const LIVE_CHUNK_BYTES = 64 * 1024;
/** A batch this small is appended to audit.jsonl before it is acknowledged: one request at a time sees its line there when answered. */
const LIVE_DEFER_MIN_EVENTS = 4;
const PROBE: Buffer = Buffer.from('\n');
const APPEND_FLAGS = fsConstants.O_WRONLY | fsConstants.O_APPEND | fsConstants.O_CREAT;

/** Queued appends as parallel arrays; two instances are swapped per batch so steady state allocates nothing. */
class Queue {
  readonly times: string[] = [];
  readonly fields: string[] = [];
  readonly resolves: Array<() => void> = [];
  readonly rejects: Array<(err: unknown) => void> = [];

  get length(): number {
    return this.times.length;
  }

  push(time: string, fields: string, resolve: () => void, reject: (err: unknown) => void): void {
    this.times.push(time);
    this.fields.push(fields);
    this.resolves.push(resolve);
    this.rejects.push(reject);
  }

  clear(): void {
    this.times.length = 0;
    this.fields.length = 0;
    this.resolves.length = 0;
    this.rejects.length = 0;
  }
}

interface State {
  checkpointMs: number;
  onRotated: (() => void) | undefined;
  onDurable: ((seconds: number, events: number) => void) | undefined;
  dir: string;
  wal: Wal;
  walPath: string;
  restored: number;
  liveBase: { seq: number; hash: string };
  path: string;
  fs: AuditFs;
  maxBytes: number;
  nextSegment: number;
  now: () => number;
  fd: number;
  headFd: number;
  seq: number;
  prev: string;
  size: number;
  macKey: Buffer | null;
}

/**
 * Append-only, hash-chained audit file with group commit: appends that arrive while a batch
 * is being made durable are made durable together in the next batch.
 *
 * A batch is written durably to audit.wal (wal.ts); its appends resolve once that write returns.
 * Its lines are then appended to audit.jsonl (a plain write, into the page cache): a small batch's
 * before it is acknowledged, a larger one's with the next batches, LIVE_CHUNK_BYTES at a time, when
 * a checkpoint is due, or when the load pauses. So audit.jsonl only ever holds acknowledged lines,
 * and under load lags the WAL by at most about that much. A checkpoint makes audit.jsonl itself
 * durable every HEAD_INTERVAL_MS, off the batch path, and before the WAL starts a new lap, a
 * rotation and close. open() restores from the WAL whatever audit.jsonl lost or had not been given
 * yet.
 */
export class AuditLog {
  readonly path: string;
  readonly #dir: string;
  readonly #fs: AuditFs;
  readonly #now: () => number;
  readonly #maxBytes: number;
  readonly #checkpointMs: number;
  readonly #onDurable: ((seconds: number, events: number) => void) | undefined;
  readonly #onRotated: (() => void) | undefined;
  readonly #wal: Wal;
  readonly #walPath: string;
  /** Lines open() copied from the WAL into audit.jsonl (the file had lost them in a crash). */
  readonly restoredLines: number;
  /** Set when open() found no audit.head next to a non-empty chain (recorded as audit.unanchored). */
  anchorMissing: { fileSeq: number } | null = null;
  readonly #macKey: Buffer | null;
  #fd: number;
  readonly #headFd: number;
  #nextSegment: number;
  /** A rotation renamed the live file but could not create a new one: writes go on into the segment. */
  #liveMissing = false;
  #rotating = false;
  /** A rotation's rename or new live file is not durable in the directory yet: no lap may start on the new file before it is. */
  #dirSyncPending = false;
  /** The chain position ahead of the live file's first line (the last segment's end, or seq 0). */
  #liveBase: { seq: number; hash: string };

  // Chain state of the last acknowledged line (durable in the WAL); only advanced once a batch is durable.
  #seq: number;
  #prev: string;
  #size: number;
  // Acknowledged batches (durable in the WAL's lap) not yet appended to audit.jsonl; they end at #seq.
  #unwritten: Buffer[] = [];
  #unwrittenBytes = 0;
  // The last line appended to audit.jsonl (in the page cache, not necessarily durable).
  #writtenSeq: number;
  #writtenHash: string;
  #writtenSize: number;
  // What is durable in audit.jsonl itself (valid unless #restorePending).
  #syncedSeq: number;
  #syncedHash: string;
  #syncedSize: number;

  #healthy = true;
  /** The live file may hold bytes past #size that were never acknowledged: cut them before writing on. */
  #truncatePending = false;
  /** The WAL may hold lines of a refused batch at its offset: end the lap there before writing on. */
  #walCutPending = false;
  /** An fdatasync of audit.jsonl failed: what it holds past the lap's base is rewritten from the WAL. */
  #restorePending = false;
  /** A lap that must start (durably) before the next batch: its start failed. */
  #lapStartPending: LapBase | null = null;
  /** Bumped by every cut, restore and rotation of the live file: a sync that saw one says nothing about the new state. */
  #liveEpoch = 0;
  #liveSyncs: Promise<unknown> = Promise.resolve();
  #closed = false;
  #closing: Promise<void> | null = null;

  #queue = new Queue();
  #inflight = new Queue();
  #flushing = false;
  #probes: Array<(ok: boolean) => void> = [];
  #idleWaiters: Array<() => void> = [];
  readonly #runBound = (): void => void this.#run();

  #headBusy = false;
  #headTimer: NodeJS.Timeout | null = null;
  #headWrittenAt = -Infinity;
  #headWrittenSeq = 0;
  #headIdleWaiters: Array<() => void> = [];
  readonly #headBuf: Buffer;

  #lastMs = NaN;
  #lastIso = '';

  #events = 0;
  #batches = 0;
  #maxBatch = 0;

  private constructor(s: State) {
    this.path = s.path;
    this.#dir = s.dir;
    this.#fs = s.fs;
    this.#now = s.now;
    this.#maxBytes = s.maxBytes;
    this.#checkpointMs = s.checkpointMs;
    this.#onDurable = s.onDurable;
    this.#onRotated = s.onRotated;
    this.#wal = s.wal;
    this.#walPath = s.walPath;
    this.restoredLines = s.restored;
    this.#macKey = s.macKey;
    this.#headBuf = Buffer.alloc(s.macKey === null ? HEAD_SIZE : KEYED_HEAD_SIZE);
    this.#liveBase = s.liveBase;
    this.#nextSegment = s.nextSegment;
    this.#fd = s.fd;
    this.#headFd = s.headFd;
    this.#seq = this.#writtenSeq = this.#syncedSeq = s.seq;
    this.#prev = this.#writtenHash = this.#syncedHash = s.prev;
    this.#size = this.#writtenSize = this.#syncedSize = s.size;
  }

  /**
   * Creates dir and files if missing; after a crash makes the live file read as the WAL's lap from
   * the lap's base on (restoring what it lost, cutting what the lap does not hold and recording
   * that); without a lap to follow, cuts a torn last line (recording it); makes the live file
   * durable, starts a new lap, continues the chain.
   */
  static async open(opts: AuditLogOptions): Promise<AuditLog> {
    const fs = opts.fs ?? nodeAuditFs;
    await mkdir(opts.dir, { recursive: true, mode: 0o700 });
    const path = join(opts.dir, LIVE_FILE);
    const headPath = join(opts.dir, HEAD_FILE);
    const walPath = join(opts.dir, WAL_FILE);
    const walBytes = Math.max(opts.walBytes ?? DEFAULT_WAL_BYTES, 2 * LAP_DATA);
    const fd = await fs.open(path, APPEND_FLAGS, FILE_MODE);
    let headFd = -1;
    let wal: Wal | null = null;
    try {
      const segments = await listSegments(opts.dir);
      const lastSegment = segments.at(-1)?.path;
      const liveBase = await chainBefore(lastSegment);
      const walText = await readWal(walPath);
      const lap = walText === null ? null : readLap(walText);
      // After a crash the live file from the lap's base on is made to read as the lap: lines it lost
      // are copied back, a half-copied line is completed, and anything after what the lap holds is
      // cut (a batch whose durable write never finished, torn bytes) and recorded.
      const plan = lap === null ? null : await planReplay(path, lap, liveBase);
      let seq: number, hash: string, size: number;
      let dropped: { bytes: number; text: string; end: string } | null;
      if (plan !== null) {
        await fs.ftruncate(fd, plan.cutAt);
        await writeAll(fs, fd, plan.append);
        ({ seq, hash, size, dropped } = plan);
      } else {
        // No lap to follow (no WAL yet), or its base is gone (the head check below reports that).
        const tail = await continueFrom(path, lastSegment);
        if (tail.tornBytes > 0) await fs.ftruncate(fd, tail.durableSize);
        ({ seq, hash, durableSize: size } = tail);
        dropped = tail.tornBytes > 0 ? { bytes: tail.tornBytes, text: tail.tornText, end: tail.tornText } : null;
      }
      // Whatever the crash left in the page cache is made durable before the WAL's old lap is overwritten.
      await fs.fdatasync(fd);
      wal = await Wal.open(fs, walPath, walBytes, opts.syncMode ?? DEFAULT_SYNC_MODE, walText?.length ?? null);
      await wal.startLap({ liveOffset: size, seq, hash }); // the old lap is in the live file now
      const head = await readHead(headPath);
      headFd = await fs.open(headPath, fsConstants.O_RDWR | fsConstants.O_CREAT, FILE_MODE);
      const log = new AuditLog({
        dir: opts.dir, path, fs, now: opts.now ?? Date.now, fd, headFd, onDurable: opts.onDurable, onRotated: opts.onRotated, wal, walPath,
        restored: plan?.restored ?? 0, liveBase, maxBytes: opts.maxBytes ?? DEFAULT_MAX_BYTES, checkpointMs: opts.checkpointMs ?? HEAD_INTERVAL_MS, nextSegment: (segments.at(-1)?.index ?? 0) + 1,
        seq, prev: hash, size, macKey: opts.macKey ?? null,
      });
      const records: Array<Promise<void>> = [];
      if (dropped !== null) {
        records.push(log.append({ type: 'audit.repaired', droppedBytes: dropped.bytes, dropped: dropped.text, ...(dropped.end !== dropped.text ? { droppedEnd: dropped.end } : {}) }));
      }
      // The head never leads the file, so a head beyond (or different at) the file's end means lines
      // were removed while we were down. Record it in the chain rather than silently re-anchoring.
      if (typeof head === 'object' && (head.seq > seq || (head.seq === seq && head.hash !== hash))) {
        records.push(log.append({
          type: 'audit.truncated', headSeq: head.seq, headHash: head.hash, fileSeq: seq, fileHash: hash,
        }));
      } else if (typeof head === 'object' || seq === 0) {
        // Anchored now, durably, so that a crash before the first checkpoint leaves a head (lagging, never missing).
        await log.#writeHead();
        await fs.fdatasync(headFd).catch(() => undefined);
        if (head === 'absent') await (fs.syncDir ?? nodeAuditFs.syncDir!)(opts.dir).catch(() => undefined);
      } else {
        // No anchor next to a chain that has lines: lines cut from its end could not be told. Recorded
        // in the chain (verify reports that line) rather than silently re-anchored by the next checkpoint.
        log.anchorMissing = { fileSeq: seq };
        records.push(log.append({ type: 'audit.unanchored', head: head === 'absent' ? 'missing' : 'unreadable', fileSeq: seq, fileHash: hash }));
      }
      await Promise.all(records);
      return log;
    } catch (err) {
      await fs.close(fd).catch(() => undefined);
      if (headFd !== -1) await fs.close(headFd).catch(() => undefined);
      if (wal !== null) await wal.close().catch(() => undefined);
      throw err;
    }
  }

  /** Resolves once the event's line is on stable storage (see SyncMode); rejects on I/O error or a bad event. */
  append(event: AuditEvent): Promise<void> {
    if (this.#closed) return Promise.reject(new Error('audit log is closed'));
    let fields: string;
    try {
      fields = serialiseFields(event);
    } catch (err) {
      return Promise.reject(err);
    }
    const time = this.#isoNow();
    return new Promise<void>((resolve, reject) => {
      this.#queue.push(time, fields, resolve, reject);
      this.#kick();
    });
  }

  /** False after the last durable write failed; true again after a later one succeeds. */
  get healthy(): boolean {
    return this.#healthy;
  }

  /**
   * For /readyz: when unhealthy, runs an empty batch to see if the disk is back. It writes one
   * newline past the live file's end and cuts it off again durably, and ends the WAL's lap durably
   * where it already ends, so a full disk still reads as unhealthy. Neither file changes.
   */
  probe(): Promise<boolean> {
    if (this.#healthy || this.#closed) return Promise.resolve(this.#healthy);
    return new Promise<boolean>((resolve) => {
      this.#probes.push(resolve);
      this.#kick();
    });
  }

  stats(): AuditStats {
    return { events: this.#events, batches: this.#batches, maxBatch: this.#maxBatch };
  }

  /** Refuses new appends, waits for queued ones, makes the live file durable, updates the head, closes the fds. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#closed = true;
    if (this.#flushing) await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
    if (this.#headTimer !== null) clearTimeout(this.#headTimer);
    this.#headTimer = null;
    while (this.#headBusy) await new Promise<void>((resolve) => this.#headIdleWaiters.push(resolve));
    // While a repair is still pending the WAL keeps its lap, and the next open() puts the live file right from it.
    await this.#prepare().catch(() => undefined);
    await this.#writeUnwritten();
    const clean = (): boolean => !this.#restorePending && !this.#truncatePending && !this.#walCutPending;
    if (clean() && this.#syncedSeq < this.#seq) await this.#syncLive(this.#seq, this.#prev, this.#size).catch(() => undefined);
    if (clean() && this.#syncedSeq === this.#seq) {
      // Everything is durable in the live file: empty the lap, so a later open() has nothing to follow.
      await this.#wal.startLap({ liveOffset: this.#size, seq: this.#seq, hash: this.#prev }).catch(() => undefined);
    }
    if (!this.#restorePending && this.#headWrittenSeq !== this.#syncedSeq) await this.#writeHead();
    const results = await Promise.allSettled([this.#fs.close(this.#fd), this.#fs.close(this.#headFd), this.#wal.close()]);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  }

  #isoNow(): string {
    const ms = this.#now();
    if (ms !== this.#lastMs) {
      this.#lastMs = ms;
      this.#lastIso = new Date(ms).toISOString();
    }
    return this.#lastIso;
  }

  #kick(): void {
    if (this.#flushing) return;
    this.#flushing = true;
    setImmediate(this.#runBound);
  }

  /**
   * Each batch starts in the check phase (setImmediate): after the event loop has handled every
   * socket that was ready, so all the requests that arrived together share one durable write. A
   * write costs the same CPU whatever it carries, so under load bigger batches mean less CPU per
   * request (measured: 13 → 16 events per write, 55 → 49 µs CPU per blocked request).
   */
  async #run(): Promise<void> {
    try {
      for (let first = true; ; first = false) {
        if (this.#queue.length === 0 && this.#probes.length === 0) {
          if (this.#unwrittenBytes === 0) break;
          // The load may have paused: one event-loop turn for the requests just answered to come
          // back with more; if none did, the lines not yet in audit.jsonl go there now.
          await nextCheckPhase();
          if (this.#queue.length === 0 && this.#probes.length === 0) {
            await this.#writeUnwritten();
            continue;
          }
        } else if (!first) await nextCheckPhase();
        const batch = this.#queue;
        this.#queue = this.#inflight;
        this.#inflight = batch;
        const probes = this.#probes;
        if (probes.length > 0) this.#probes = [];
        try {
          await this.#commit(batch);
        } catch (err) {
          this.#fail(batch, err); // #commit handles I/O errors itself; this is a last line of defence
        }
        batch.clear();
        if (this.#unwrittenBytes >= LIVE_CHUNK_BYTES) await this.#writeUnwritten();
        if (this.#size >= this.#maxBytes || this.#liveMissing) await this.#rotate();
        for (const resolve of probes) resolve(this.#healthy);
      }
    } finally {
      this.#flushing = false;
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  async #commit(batch: Queue): Promise<void> {
    const n = batch.length;
    if (n === 0) return this.#probeDisk();

    let seq = this.#seq;
    let prev = this.#prev;
    let text = '';
    const key = this.#macKey;
    for (let i = 0; i < n; i++) {
      const plain = lineStart(++seq, batch.times[i]!, batch.fields[i]!, prev);
      const start = key === null ? plain : withMac(plain, key);
      prev = hashOfStart(start);
      text += sealLine(start, prev);
    }
    const buf = Buffer.from(text, 'utf8');

    const started = this.#onDurable === undefined ? 0 : performance.now();
    let inLive = true;
    try {
      await this.#prepare();
      if (!this.#wal.fits(buf.length)) {
        // The lap is full: the live file must hold everything durably before the WAL starts over.
        await this.#writeUnwritten();
        await this.#syncLive(this.#seq, this.#prev, this.#size);
        await this.#startLap();
      }
      if (this.#wal.fits(buf.length)) {
        await this.#wal.write(buf);
        inLive = false;
      } else {
        // Larger than the whole WAL: durable in the live file itself; the next lap starts after it.
        await writeAll(this.#fs, this.#fd, buf);
        // This sync vouches for the acknowledged lines only: a checkpoint while the lap start below
        // is in flight must not point audit.head at a batch that may still be refused and cut.
        await this.#syncLive(this.#seq, this.#prev, this.#size);
        const epoch = this.#liveEpoch;
        // The old lap on disk must not outlive this batch: its base would put the batch beyond it.
        const after: LapBase = { liveOffset: this.#size + buf.length, seq, hash: prev };
        await this.#startLap(after).catch((err: unknown) => {
          // Once the header naming the batch's end is durable, a restart keeps the batch: it is
          // recorded. Only the NUL after the header failed; it is owed as a WAL cut at LAP_DATA.
          if (this.#wal.lapBase !== after) throw err;
          this.#lapStartPending = null;
          this.#walCutPending = true;
        });
        if (epoch === this.#liveEpoch && !this.#restorePending) {
          this.#syncedSeq = seq;
          this.#syncedHash = prev;
          this.#syncedSize = this.#size + buf.length;
        }
      }
    } catch (err) {
      // Whatever reached either file is neither durable nor acknowledged: cut both back to the last acknowledged line.
      this.#truncatePending = true;
      this.#walCutPending = true;
      // A lap start still owed (a batch larger than the WAL whose own lap start failed) would name
      // a base past the cut; the lap starts where the acknowledged lines end instead.
      if (this.#lapStartPending !== null) this.#lapStartPending = { liveOffset: this.#size, seq: this.#seq, hash: this.#prev };
      await this.#truncateIfPending().catch(() => undefined);
      await this.#cutWalIfPending().catch(() => undefined);
      this.#fail(batch, err);
      return;
    }

    const seconds = this.#onDurable === undefined ? 0 : (performance.now() - started) / 1000;
    this.#seq = seq;
    this.#prev = prev;
    this.#size += buf.length;
    // A checkpoint's sync may have failed while this batch was being written: then the live file
    // is still to be rewritten from the WAL, and the log is not healthy until that is done.
    this.#healthy = !this.#restorePending;
    this.#events += n;
    this.#batches++;
    if (n > this.#maxBatch) this.#maxBatch = n;
    if (inLive) {
      this.#writtenSeq = seq;
      this.#writtenHash = prev;
      this.#writtenSize = this.#size;
    } else {
      this.#unwritten.push(buf);
      this.#unwrittenBytes += buf.length;
      // A small batch, or one that a checkpoint is due after: audit.jsonl gets everything now, so
      // each checkpoint still covers all that was acknowledged before it.
      if (n < LIVE_DEFER_MIN_EVENTS || performance.now() - this.#headWrittenAt >= this.#checkpointMs) await this.#writeUnwritten();
    }
    for (let i = 0; i < n; i++) batch.resolves[i]!();
    this.#scheduleCheckpoint();
    if (this.#onDurable !== undefined) {
      try {
        this.#onDurable(seconds, n);
      } catch {
        // Metrics must never fail a batch that is already durable and acknowledged.
      }
    }
  }

  /** A batch without events: exercises both files' durable writes and leaves them as they were. */
  async #probeDisk(): Promise<void> {
    try {
      await this.#prepare();
      await this.#writeUnwritten();
      if (this.#restorePending) throw new Error('audit file to be restored from the WAL');
      this.#truncatePending = true;
      await writeAll(this.#fs, this.#fd, PROBE);
      await this.#truncateIfPending();
      this.#walCutPending = true;
      await this.#cutWalIfPending();
      this.#healthy = true;
    } catch {
      await this.#truncateIfPending().catch(() => undefined);
      this.#healthy = false;
    }
  }

  /**
   * Appends the acknowledged lines audit.jsonl has not been given yet. Never throws: the lines are
   * durable in the WAL's lap, so after a failed append the live file is rewritten from it before
   * the next batch (#restoreIfPending), and whatever needs the live file whole checks #restorePending.
   */
  async #writeUnwritten(): Promise<void> {
    if (this.#unwrittenBytes === 0) return;
    if (this.#restorePending) {
      // The repair rewrites everything past the lap's base from the WAL, these lines included.
      this.#unwritten = [];
      this.#unwrittenBytes = 0;
      return;
    }
    const buf = this.#unwritten.length === 1 ? this.#unwritten[0]! : Buffer.concat(this.#unwritten, this.#unwrittenBytes);
    this.#unwritten = [];
    this.#unwrittenBytes = 0;
    const seq = this.#seq;
    const hash = this.#prev;
    const size = this.#size;
    try {
      await writeAll(this.#fs, this.#fd, buf);
      this.#writtenSeq = seq;
      this.#writtenHash = hash;
      this.#writtenSize = size;
    } catch {
      this.#liveEpoch++;
      this.#restorePending = true;
      this.#healthy = false;
    }
  }

  /** Repairs left over from a failure, in order, before anything new is written. */
  async #prepare(): Promise<void> {
    // Batches written into a renamed segment would sit in a lap based in another file: wait for the new live file.
    if (this.#liveMissing) {
      const step = this.#dirSyncPending ? `could not make the directory durable after renaming ${LIVE_FILE} to a segment` : `could not create a new ${LIVE_FILE}`;
      throw new Error(`audit rotation ${step}; gated tasks are refused until it can`);
    }
    await this.#cutWalIfPending(); // first: a restore reads the lap, which must not hold refused lines
    await this.#restoreIfPending();
    await this.#truncateIfPending();
    if (this.#lapStartPending !== null) await this.#startLap(this.#lapStartPending);
  }

  /** Starts a new WAL lap at `base` (default: where the chain and the live file are now), durably; retried by #prepare if it fails. */
  async #startLap(base: LapBase = { liveOffset: this.#size, seq: this.#seq, hash: this.#prev }): Promise<void> {
    this.#lapStartPending = base;
    if (this.#dirSyncPending) {
      await (this.#fs.syncDir ?? nodeAuditFs.syncDir!)(this.#dir);
      this.#dirSyncPending = false;
    }
    await this.#wal.startLap(base);
    this.#lapStartPending = null;
  }

  /**
   * fdatasync of the live file, one at a time (two syncs on one descriptor could split a write-back
   * error between them). Resolves only when the live file holds (seq, hash, size) durably; rejects
   * when a cut, restore or rotation came in between, a restore is pending, or the sync failed. After
   * a failure what the file holds past the lap's base is unknown (the error is reported once, and
   * the pages may be gone), so it is rewritten from the WAL.
   */
  #syncLive(seq: number, hash: string, size: number): Promise<void> {
    const epoch = this.#liveEpoch;
    const fd = this.#fd;
    const synced = this.#liveSyncs.then(() => this.#fs.fdatasync(fd)).then(
      () => {
        // A cut, restore or rotation came in between, or a sync before this one failed (after which
        // Linux reports success for pages it dropped): this sync vouches for nothing.
        if (epoch !== this.#liveEpoch || this.#restorePending) throw new Error('audit file changed while it was being synced');
        if (seq < this.#syncedSeq) return;
        this.#syncedSeq = seq;
        this.#syncedHash = hash;
        this.#syncedSize = size;
      },
      (err: unknown) => {
        this.#liveEpoch++;
        this.#restorePending = true;
        this.#healthy = false;
        throw err;
      },
    );
    this.#liveSyncs = synced.catch(() => undefined);
    return synced;
  }

  /**
   * After a failed sync of the live file: what it holds past the lap's base may never reach the disk
   * (the page cache can still show it), so it is cut and written again from the WAL, whose lap holds
   * it (a lap only starts over after a good sync, and the WAL cut ran first in #prepare).
   */
  async #restoreIfPending(): Promise<void> {
    if (!this.#restorePending) return;
    this.#liveEpoch++;
    // The lap holds them too: the rewrite below puts them in the live file.
    this.#unwritten = [];
    this.#unwrittenBytes = 0;
    await this.#liveSyncs;
    const wal = await readWal(this.#walPath);
    const lap = wal === null ? null : readLap(wal);
    const plan = lap === null ? null : await planReplay(this.path, lap, this.#liveBase);
    const covered = plan !== null && plan.seq === this.#seq && plan.size === this.#size;
    // Without a lap that ends at the last acknowledged line in this file (none, or one based in the
    // segment a rotation just closed), only a file that a good sync covered up to that line is whole:
    // a failed sync only loses what was written after the last good one.
    if (!covered && !(this.#syncedSeq === this.#seq && this.#syncedSize === this.#size)) {
      throw new Error(`audit WAL does not hold what ${this.path} may have lost; restart pamgate to recover it`);
    }
    if (covered && plan.cutAt < this.#syncedSize) {
      // The cut goes below what was durable: until the sync below succeeds, only the lap's base is.
      this.#syncedSeq = lap!.base.seq;
      this.#syncedHash = lap!.base.hash;
      this.#syncedSize = lap!.base.liveOffset;
    }
    await this.#fs.ftruncate(this.#fd, covered ? plan.cutAt : this.#size);
    if (covered) await writeAll(this.#fs, this.#fd, plan.append);
    this.#writtenSeq = this.#seq;
    this.#writtenHash = this.#prev;
    this.#writtenSize = this.#size;
    this.#liveEpoch++;
    this.#restorePending = false; // the sync below is the one that counts; if it fails, it is pending again
    await this.#syncLive(this.#seq, this.#prev, this.#size);
    this.#truncatePending = false;
  }

  /**
   * Moves the live file aside as the next segment and starts a new live file; the chain runs on
   * (the next line's prev is the segment's last hash). Runs between batches, so nothing is half
   * written, and only once the live file is durable. A crash after the rename leaves no live file:
   * open() then continues from the segment. A failed rotation is retried after the next batch; the
   * events themselves are already durable.
   */
  async #rotate(): Promise<void> {
    const rename = this.#fs.rename ?? nodeAuditFs.rename!;
    const syncDir = this.#fs.syncDir ?? nodeAuditFs.syncDir!;
    await this.#writeUnwritten();
    if (this.#truncatePending || this.#restorePending || this.#walCutPending) return;
    this.#rotating = true;
    try {
      // The file being closed (the live file, or the segment it already became) holds everything durably first.
      await this.#syncLive(this.#seq, this.#prev, this.#size);
      if (!this.#liveMissing) {
        await rename(this.path, join(this.#dir, segmentName(this.#nextSegment)));
        this.#nextSegment++;
        this.#liveMissing = true;
        this.#dirSyncPending = true;
        await syncDir(this.#dir);
        this.#dirSyncPending = false;
      }
      this.#liveEpoch++;
      await this.#liveSyncs;
      const fd = await this.#fs.open(this.path, APPEND_FLAGS, FILE_MODE);
      const old = this.#fd;
      this.#fd = fd;
      this.#size = 0;
      this.#writtenSize = 0;
      this.#syncedSize = 0;
      this.#liveBase = { seq: this.#seq, hash: this.#prev };
      this.#liveMissing = false;
      // The WAL's lap is based in the segment now: no batch may go into it before a lap based on
      // the new file has started, and that only once the directory holds the new file durably.
      this.#dirSyncPending = true;
      this.#lapStartPending = { liveOffset: 0, seq: this.#seq, hash: this.#prev };
      await this.#fs.close(old).catch(() => undefined);
      await this.#startLap(this.#lapStartPending).catch(() => undefined); // a failure leaves it pending: no batch until it is done
      try {
        this.#onRotated?.();
      } catch {
        // A listener's failure is not the rotation's.
      }
    } catch {
      // Keep appending to the open fd (live file or, after the rename, the newest segment).
    } finally {
      this.#rotating = false;
    }
  }

  /**
   * Cuts the live file back to the last acknowledged line, and makes the cut durable before anything
   * else is written: whole lines of a refused batch may already have been written back, and must not
   * come back after a crash as if they had been recorded.
   */
  async #truncateIfPending(): Promise<void> {
    if (!this.#truncatePending) return;
    // The cut goes to #size, which the live file must reach first (acknowledged lines, never cut).
    await this.#writeUnwritten();
    if (this.#restorePending) throw new Error('audit file to be restored from the WAL before it is cut');
    this.#liveEpoch++;
    await this.#fs.ftruncate(this.#fd, this.#size);
    this.#liveEpoch++;
    await this.#syncLive(this.#seq, this.#prev, this.#size);
    this.#truncatePending = false;
  }

  async #cutWalIfPending(): Promise<void> {
    if (!this.#walCutPending) return;
    await this.#wal.cut();
    this.#walCutPending = false;
  }

  #fail(batch: Queue, err: unknown): void {
    this.#healthy = false;
    const rejects = batch.rejects;
    for (let i = 0; i < rejects.length; i++) rejects[i]!(err);
  }

  // A checkpoint syncs the live file, then points audit.head at what it synced: the head lags the
  // file by up to HEAD_INTERVAL_MS (more after a crash) but never leads it, so it needs no sync of
  // its own. Throttled on monotonic time (a wall-clock step back must not freeze it): run at once
  // when the last one is checkpointMs old, else when it will be; one in flight at a time.
  #scheduleCheckpoint(): void {
    if (this.#headBusy || this.#headTimer !== null) return; // the one in flight reschedules when done
    const wait = this.#headWrittenAt + this.#checkpointMs - performance.now();
    if (wait <= 0) {
      void this.#checkpoint();
      return;
    }
    this.#headTimer = setTimeout(this.#checkpointTimerBound, wait);
    this.#headTimer.unref();
  }

  readonly #checkpointTimerBound = (): void => {
    this.#headTimer = null;
    void this.#checkpoint();
  };

  async #checkpoint(): Promise<void> {
    this.#headBusy = true;
    // A cut or restore in progress owns the live file; the next checkpoint will catch up. Only what
    // was appended so far is synced (a batch that finds a checkpoint due appends everything first).
    this.#headWrittenAt = performance.now();
    const sync = !this.#truncatePending && !this.#restorePending && !this.#rotating && this.#syncedSeq < this.#writtenSeq;
    if (sync) await this.#syncLive(this.#writtenSeq, this.#writtenHash, this.#writtenSize).catch(() => undefined);
    if (!this.#restorePending && this.#headWrittenSeq !== this.#syncedSeq) await this.#writeHead();
    this.#headBusy = false;
    if (this.#syncedSeq !== this.#seq && !this.#closed) this.#scheduleCheckpoint();
    const waiters = this.#headIdleWaiters;
    this.#headIdleWaiters = [];
    for (const resolve of waiters) resolve();
  }

  async #writeHead(): Promise<void> {
    const seq = this.#syncedSeq;
    const size = this.#headBuf.length;
    encodeHead(seq, this.#syncedHash, this.#headBuf, this.#macKey === null ? undefined : headMac(this.#macKey, seq, this.#syncedHash));
    try {
      // Whole or not at all: half a new record over the old one would name a line that never was.
      for (let off = 0; off < size; ) {
        const written = await this.#fs.write(this.#headFd, this.#headBuf, off, size - off, off);
        if (written <= 0) throw new Error('audit head write made no progress');
        off += written;
      }
      this.#headWrittenSeq = seq;
    } catch {
      // A stale head only weakens truncation detection until the next checkpoint rewrites it.
    }
  }
}

async function writeAll(fs: AuditFs, fd: number, buf: Buffer): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const written = await fs.write(fd, buf, off, buf.length - off, null);
    if (written <= 0) throw new Error('audit write made no progress');
    off += written;
  }
}

function nextCheckPhase(): Promise<void> {
  return new Promise<void>((resolve) => setImmediate(resolve));
}

/**
 * Where the chain goes on: the live file's last line, or, when the live file holds none (a
 * rotation just happened, or a crash came between its rename and the new file), the newest
 * segment's last line. Torn bytes are only ever cut from the live file.
 */
async function continueFrom(live: string, lastSegment: string | undefined): Promise<TailState> {
  const tail = await readTail(live);
  if (tail.seq > 0 || lastSegment === undefined) return tail;
  const previous = await readTail(lastSegment);
  return { ...tail, seq: previous.seq, hash: previous.hash };
}

/** The chain position ahead of the live file: the newest segment's last line, or seq 0. */
async function chainBefore(lastSegment: string | undefined): Promise<{ seq: number; hash: string }> {
  if (lastSegment === undefined) return { seq: 0, hash: GENESIS };
  const { seq, hash } = await readTail(lastSegment);
  return { seq, hash };
}
