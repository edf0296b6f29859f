import { readFile } from 'node:fs/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AUDIT_EVENT_MAX_BYTES, AUDIT_VALUE_MAX_CHARS, boundedAudit, type AuditSink } from '../../src/audit/bound.js';
import { AuditLog } from '../../src/audit/log.js';
import { verifyAuditFile } from '../../src/audit/verify.js';
import { tempDir } from '../helpers/gateway.js';

let log: AuditLog;
/** The writer as the gateway's components get it. */
let recorder: AuditSink;

beforeEach(async () => {
  log = await AuditLog.open({ dir: await tempDir('pamgate-bound-') });
  recorder = boundedAudit(log);
});
afterEach(async () => {
  await log.close();
});

/** Each appended line as written, raw and parsed. */
async function written(): Promise<Array<{ raw: string; event: Record<string, any> }>> {
  const text = await readFile(log.path, 'utf8');
  return text.trim().split('\n').map((raw) => ({ raw, event: JSON.parse(raw) as Record<string, any> }));
}

/** The writer's own fields (seq, time, prev, hash) and the six positional ones: what a line costs beyond the bounded content. */
const LINE_OVERHEAD = 400;

describe('every event on its way to the audit writer is bounded', () => {
  it('strings that escape to six bytes a character cannot get past the byte bound', async () => {
    const control = '\u0001'.repeat(10_000);
    await recorder.append({ type: 'request.created', actor: 'eve@contoso.com', reason: control, parameters: { list: Array.from({ length: 1000 }, () => control), a: control } });
    const [line] = await written();
    expect(Buffer.byteLength(line!.raw)).toBeLessThanOrEqual(AUDIT_EVENT_MAX_BYTES + LINE_OVERHEAD + 6 * AUDIT_VALUE_MAX_CHARS);
    expect(line!.event['reason']).toBe('\u0001'.repeat(AUDIT_VALUE_MAX_CHARS) + '…[cut: 10000 chars]');
    expect(line!.event['truncated'].dropped).toBeGreaterThan(990); // the list's elements past the budget, and a
  });

  it('deep nesting, long member names and "__proto__" are recorded as data, bounded', async () => {
    let deep: unknown = 'bottom';
    for (let i = 0; i < 50; i++) deep = [deep];
    const longKey = 'k'.repeat(1000);
    const params = JSON.parse(`{"__proto__":{"polluted":true},"${longKey}1":1,"${longKey}2":2,"deep":${JSON.stringify(deep)}}`) as Record<string, unknown>;
    await recorder.append({ type: 'task.blocked', actor: null, task: 'New-JournalRule', parameters: params });
    const [line] = await written();
    const recorded = line!.event['parameters'] as Record<string, unknown>;
    expect(Object.keys(recorded)).toEqual(['__proto__', 'k'.repeat(AUDIT_VALUE_MAX_CHARS) + '…[cut: 1001 chars]', 'deep']);
    expect(JSON.stringify(recorded['deep'])).toContain('[cut: nested deeper than 8]');
    expect(line!.event['truncated']).toEqual({ values: 3, dropped: 1 }); // two names cut alike: one is left out
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });

  it('an event within the bound is written exactly as given', async () => {
    const event = { type: 'task.executed', actor: 'eve@contoso.com', task: 'New-JournalRule', policy: 'journal-rules', requestId: 'r1', remote: '127.0.0.1', parameters: { name: 'j1', list: [1, 2, 3], nested: { ok: true } } };
    await recorder.append(event);
    const [line] = await written();
    expect(line!.event).toMatchObject(event);
    expect(line!.event).not.toHaveProperty('truncated');
  });

  it('cut events verify and keep the chain', async () => {
    for (let i = 0; i < 20; i++) await recorder.append({ type: 'task.blocked', actor: 'x'.repeat(100_000), parameters: { v: 'é'.repeat(100_000) } });
    await log.close();
    for (const { raw } of await written()) expect(Buffer.byteLength(raw)).toBeLessThan(2 * 1024);
    expect(await verifyAuditFile(log.path)).toMatchObject({ ok: true, events: 20 });
  });
});
