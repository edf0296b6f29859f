import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { TEST_POLICIES } from '../helpers/policies.js';
import { send, type RawResponse, type RequestSpec } from './raw.js';
import { INVOKE, invokeBody, startStack, type Stack } from './stack.js';

/**
 * Worst-case inputs for every matcher that reads request data, sent through the real listener
 * (the gateway runs in this process, so time spent matching is time its event loop is stuck).
 * Each input is sized so that a super-linear matcher takes seconds; a linear one answers in
 * milliseconds. BUDGET_MS leaves room for a loaded machine.
 */

const BUDGET_MS = 1_000;
/** A glob with two `*` that a backtracking matcher reads in time quadratic in the name. */
const POLICIES = `${TEST_POLICIES}  - id: permission-globs\n    task: '*-*Permission'\n`;

let s: Stack;
beforeAll(async () => {
  s = await startStack({ policies: POLICIES });
});
afterAll(() => s?.stop());
beforeEach(() => s.upstream.reset());

const json = (body: string | Buffer, headers: Record<string, string> = {}): RequestSpec => ({
  target: INVOKE,
  headers: { Authorization: s.auth.eve!, 'Content-Type': 'application/json', ...headers },
  body,
});

/** Sends every spec at once; returns the answers and how long the last one took. */
async function timed(specs: RequestSpec[]): Promise<{ responses: RawResponse[]; ms: number }> {
  const started = performance.now();
  const responses = await Promise.all(specs.map((spec) => send(s.proxy, spec)));
  return { responses, ms: performance.now() - started };
}

async function expectAnsweredInTime(specs: RequestSpec[], status: number): Promise<void> {
  const { responses, ms } = await timed(specs);
  for (const r of responses) expect(r.status, r.body.slice(0, 300)).toBe(status);
  expect(ms, `${specs.length} request(s) answered in ${Math.round(ms)} ms`).toBeLessThan(BUDGET_MS);
}

const repeat = (n: number, make: (i: number) => RequestSpec): RequestSpec[] => Array.from({ length: n }, (_, i) => make(i));

describe('worst-case inputs are answered in linear time', () => {
  it('control: the budget is not vacuous — a plain gated call is answered well inside it', async () => {
    await expectAnsweredInTime([json(invokeBody('New-JournalRule'))], 403);
  });

  it('\\u unescaping of string values: a gzip body of 100,000 backslashes', async () => {
    const text = invokeBody('New-JournalRule', { Comment: '\\'.repeat(100_000) });
    const body = gzipSync(text, { level: 9 });
    expect(body.length).toBeLessThan(2_000);
    await expectAnsweredInTime([json(body, { 'Content-Encoding': 'gzip' })], 403);
    // Runs of backslashes between escapes, and an escape that only appears after unescaping.
    const mixed = invokeBody('New-JournalRule', { Comment: `${'\\'.repeat(30_000)}u0041${'\\\\u0043'.repeat(10_000)}${'\\'.repeat(30_000)}x` });
    await expectAnsweredInTime([json(mixed)], 403);
  });

  it('an escaped "CmdletName" is still found behind runs of backslashes', async () => {
    const hidden = JSON.stringify({ Note: 'x', Inner: `{"${'\\'.repeat(7)}u0043mdletName":"New-JournalRule"}` });
    const r = await send(s.proxy, json(hidden));
    expect(r.status, r.body).toBe(400);
    await s.expectNothingGated();
  });

  it('path normalisation: trailing dots and spaces of a 15,000-character segment, 20 requests at once', async () => {
    const dots = `/adminapi/${'.'.repeat(15_000)}a`;
    await expectAnsweredInTime(repeat(20, () => ({ ...json(invokeBody('Get-Mailbox')), target: dots })), 404);
    const spaced = `/adminapi/${'. '.repeat(3_500)}a`;
    await expectAnsweredInTime(repeat(20, () => ({ ...json(invokeBody('Get-Mailbox')), target: `/x/${encodeURI(spaced)}` })), 404);
    // The same through a routing header the upstream could honour.
    await expectAnsweredInTime(repeat(20, () => ({ ...json(invokeBody('Get-Mailbox')), target: '/healthz', headers: { 'X-Original-URL': dots } })), 404);
  });

  it('the query check for smuggled command names: a 15,000-character query, 20 requests at once', async () => {
    const query = `/adminapi/beta/t/other?${'%63%6d%64%6c%65'.repeat(1_000)}`;
    await expectAnsweredInTime(repeat(20, () => ({ ...json(invokeBody('Get-Mailbox')), target: query })), 404);
  });

  it('glob matching: a 100,000-character name against *-*Permission', async () => {
    const names = ['a-'.repeat(50_000) + 'a', 'a-'.repeat(50_000) + 'permissio', '-'.repeat(100_000)];
    for (const name of names) {
      const { responses, ms } = await timed([json(invokeBody(name))]);
      expect([200, 400], responses[0]!.body.slice(0, 300)).toContain(responses[0]!.status);
      expect(ms, `answered in ${Math.round(ms)} ms`).toBeLessThan(BUDGET_MS);
    }
    await expectAnsweredInTime([json(invokeBody(`${'a-'.repeat(50_000)}Permission`))], 403); // and a match is still a match
  });

  it('name folding: a 100,000-character name of fullwidth letters and Unicode dashes', async () => {
    await expectAnsweredInTime([json(invokeBody('\uFF21\u2013'.repeat(50_000) + '\uFF21'))], 200);
    await expectAnsweredInTime([json(invokeBody(`${'\u2013'.repeat(100_000)}Permission`))], 400);
  });

  it('JSON reading: deep nesting, long escapes, many near-JSON strings', async () => {
    await expectAnsweredInTime([json('['.repeat(500_000))], 400);
    await expectAnsweredInTime([json(invokeBody('New-JournalRule', { Comment: 'A'.repeat(150_000) }).replace(/A/g, '\\u0041'))], 403);
    const nearJson = Array.from({ length: 500 }, () => `[${'1,'.repeat(500)}x`);
    await expectAnsweredInTime([json(invokeBody('New-JournalRule', { Items: nearJson }))], 403);
  });

  it('content decoding: a gzip bomb, stacked codings and a long Content-Type', async () => {
    const bomb = gzipSync(Buffer.alloc(64 * 1024 * 1024, 0x20));
    await expectAnsweredInTime([json(bomb, { 'Content-Encoding': 'gzip' })], 413);
    const stacked = gzipSync(gzipSync(gzipSync(Buffer.alloc(16 * 1024 * 1024, 0x20))));
    await expectAnsweredInTime([json(stacked, { 'Content-Encoding': 'gzip, gzip, gzip' })], 413);
    const contentType = `application/json${'; charset="'.repeat(1_200)}`;
    await expectAnsweredInTime([json(invokeBody('New-JournalRule'), { 'Content-Type': contentType })], 400);
  });
});
