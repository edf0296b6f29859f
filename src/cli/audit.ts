/** `pamgate audit verify | search | tail | export`. */
import { open, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { exportSegments } from '../audit/export.js';
import { readAuditKey } from '../audit/key.js';
import { readAuditEvents, type AuditFilter } from '../audit/search.js';
import { verifyAuditFile } from '../audit/verify.js';
import { CliError } from './errors.js';

export interface AuditOptions {
  'key-file'?: string | undefined;
  type?: string | undefined;
  actor?: string | undefined;
  task?: string | undefined;
  request?: string | undefined;
  since?: string | undefined;
  until?: string | undefined;
  json?: boolean | undefined;
  follow?: boolean | undefined;
  lines?: string | undefined;
}

export async function audit(rest: string[], o: AuditOptions): Promise<number> {
  const [verb, fileArg, extra] = rest;
  if (verb === 'export') return exportTo(fileArg, extra);
  if (extra !== undefined) throw new CliError(`audit ${verb} takes one file or data dir, got also "${extra}"`);
  const file = fileArg ?? resolve(process.env['PAMGATE_DATA_DIR'] ?? './data', 'audit.jsonl');
  if (verb === 'verify') return verify(file, o['key-file']);
  if (verb === 'search') return search(await liveFile(file), o);
  if (verb === 'tail') return tail(await liveFile(file), o);
  throw new CliError(verb === undefined ? 'audit needs verify, search, tail or export (see pamgate help audit)' : `unknown audit command "${verb}": use verify, search, tail or export (see pamgate help audit)`);
}

async function verify(file: string, keyFile: string | undefined): Promise<number> {
  const key = keyFile === undefined ? undefined : await readAuditKey(keyFile, { what: '--key-file' }).catch((err: Error) => {
    throw new CliError(err.message);
  });
  const result = await verifyAuditFile(file, { key });
  if (result.ok) {
    process.stdout.write(`ok ${result.events} events${result.segments ? ` in ${result.segments + 1} files` : ''}${result.keyed ? `, macs of ${result.keyed} lines and audit.head checked with the key` : ''}\n`);
    if (result.macsUnchecked) process.stderr.write(`note: keyed checks skipped: ${result.macsUnchecked} lines carry macs; give --key-file to check them\n`);
    if (result.prunedThrough) {
      process.stderr.write(`note: events 1–${result.prunedThrough} were deleted by retention (recorded as audit.pruned); verified ${result.prunedThrough + 1}–${result.events}. Their export verifies on its own and must end with hash ${result.prunedHash}\n`);
    }
    if (result.inWal) process.stderr.write(`note: ${result.inWal} more acknowledged events are in audit.wal and not yet in the file (after a crash: the next start copies them in)\n`);
    return 0;
  }
  process.stderr.write(`${result.file ?? file}:${result.line}: ${result.reason}\n`);
  return 1;
}

async function exportTo(dest: string | undefined, dir: string | undefined): Promise<number> {
  if (dest === undefined) throw new CliError('audit export needs a destination directory: pamgate audit export DEST [DIR]');
  const dataDir = resolve(dir ?? process.env['PAMGATE_DATA_DIR'] ?? './data');
  const exported = await exportSegments(dataDir, resolve(dest));
  for (const e of exported) process.stdout.write(`exported ${e.segment} sha256 ${e.sha256}\n`);
  if (exported.length === 0) process.stdout.write('nothing to export: every rotated segment is exported already\n');
  return 0;
}

/** A data dir stands for its live audit.jsonl; a file that does not exist is an error, not an empty result. */
async function liveFile(file: string): Promise<string> {
  const info = await stat(file).catch(() => null);
  if (info === null) throw new CliError(`no audit file at ${file}: give the audit file or data dir (default $PAMGATE_DATA_DIR/audit.jsonl)`);
  return info.isDirectory() ? resolve(file, 'audit.jsonl') : file;
}

function filterOf(o: AuditOptions): AuditFilter {
  for (const [name, value] of [['--since', o.since], ['--until', o.until]] as const) {
    if (value !== undefined && Number.isNaN(Date.parse(value))) throw new CliError(`${name} must be a date such as 2026-01-31 or 2026-01-31T12:00:00Z, got "${value}"`);
  }
  return { type: o.type, actor: o.actor, task: o.task, requestId: o.request, since: o.since, until: o.until };
}

async function search(file: string, o: AuditOptions): Promise<number> {
  const filter = filterOf(o);
  const out = printer(o.json === true);
  let found = 0;
  for await (const e of readAuditEvents(file, filter)) {
    out(e);
    found++;
  }
  if (found === 0 && o.json !== true) process.stderr.write('no matching events\n');
  return 0;
}

const POLL_MS = 250;

/** The last N events; with -f, then every event appended after them, across rotations, until interrupted. */
async function tail(file: string, o: AuditOptions): Promise<number> {
  const count = o.lines === undefined ? 10 : Number(o.lines);
  if (!Number.isSafeInteger(count) || count < 0) throw new CliError(`-n must be a whole number of events, got "${o.lines}"`);
  const last: Record<string, unknown>[] = [];
  let lastSeq = 0;
  for await (const e of readAuditEvents(file)) {
    last.push(e);
    if (last.length > count) last.shift();
    if (typeof e['seq'] === 'number') lastSeq = e['seq'];
  }
  const out = printer(o.json === true);
  for (const e of last) out(e);
  if (!o.follow) return 0;
  await follow(file, lastSeq, out);
  return 0;
}

/** Polls the live file for new complete lines; a smaller or replaced file (rotation) is read from its start. */
async function follow(file: string, afterSeq: number, out: (e: Record<string, unknown>) => void): Promise<never> {
  let seq = afterSeq;
  let ino = -1;
  let offset = 0;
  let partial = '';
  const first = await stat(file).catch(() => null);
  if (first) {
    ino = first.ino;
    offset = first.size;
  }
  for (;;) {
    await new Promise((r) => setTimeout(r, POLL_MS));
    const info = await stat(file).catch(() => null);
    if (info === null) continue;
    if (info.ino !== ino || info.size < offset) {
      ino = info.ino;
      offset = 0;
      partial = '';
    }
    if (info.size === offset) continue;
    const handle = await open(file, 'r');
    try {
      const buf = Buffer.alloc(info.size - offset);
      const { bytesRead } = await handle.read(buf, 0, buf.length, offset);
      offset += bytesRead;
      const lines = (partial + buf.subarray(0, bytesRead).toString('utf8')).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        const e = parse(line);
        if (e === null) continue;
        if (typeof e['seq'] === 'number') {
          if (e['seq'] <= seq) continue;
          seq = e['seq'];
        }
        out(e);
      }
    } finally {
      await handle.close();
    }
  }
}

function parse(line: string): Record<string, unknown> | null {
  if (line.trim() === '') return null;
  try {
    const v: unknown = JSON.parse(line);
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

const COLUMNS = [
  ['TIME', 24],
  ['TYPE', 18],
  ['ACTOR', 26],
  ['TASK', 24],
  ['REQUEST', 0],
] as const;

/** JSON lines, or a table (time, type, actor, task, request) whose header comes with the first row. */
function printer(json: boolean): (e: Record<string, unknown>) => void {
  if (json) return (e) => process.stdout.write(JSON.stringify(e) + '\n');
  let headed = false;
  return (e) => {
    if (!headed) {
      process.stdout.write(row(COLUMNS.map(([name]) => name)) + '\n');
      headed = true;
    }
    process.stdout.write(row([e['time'], e['type'], e['actor'], e['task'], e['requestId']].map(cell)) + '\n');
  };
}

function cell(value: unknown): string {
  if (value === null || value === undefined || value === '') return '-';
  return String(value).replace(/[\u0000-\u001f\u007f]/g, '?');
}

function row(cells: string[]): string {
  return cells.map((c, i) => (i < COLUMNS.length - 1 ? c.padEnd(COLUMNS[i]![1]) : c)).join(' ').trimEnd();
}
