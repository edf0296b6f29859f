import { existsSync } from 'node:fs';
import { mkdtemp, open, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JournalStore } from '../../src/grants/journal-store.js';
import { tempDir } from '../helpers/gateway.js';
import { api } from '../helpers/http.js';
import { startUpstreamProcess, type CountingUpstream } from '../helpers/upstream.js';
import { token } from '../helpers/tokens.js';
import { decide, tok } from './helpers/flows.js';
import { startStateGateway, type InProcGateway } from './helpers/inproc.js';
import { STATE_POLICIES } from './helpers/policies.js';

let upstream: CountingUpstream;
const dirs: string[] = [];
beforeAll(async () => {
  upstream = await startUpstreamProcess();
});
afterAll(async () => {
  await upstream?.stop();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe('pending requests per user are capped', () => {
  let gw: InProcGateway;
  beforeAll(async () => {
    gw = await startStateGateway({ policies: STATE_POLICIES, upstreamUrl: upstream.url });
    dirs.push(gw.dataDir);
  });
  afterAll(async () => {
    await gw?.close();
  });

  // Tokens valid for two days: one test moves the gateway's clock past the pending expiry.
  const create = async (user: string, task = 'New-JournalRule') => api(gw.controlUrl, 'POST', '/api/requests', await token(user, { expiresInSeconds: 48 * 3600 }), { task, reason: 'cap test' });

  it('answers 429 with a clear message once a user has 20 pending; others are unaffected; a decision frees a slot', async () => {
    // Auto-approved requests are never pending: they do not count.
    for (let i = 0; i < 5; i++) expect((await create('flood@contoso.com', 'Search-Mailbox')).status).toBe(201);
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) {
      const r = await create('flood@contoso.com', i % 2 ? 'New-JournalRule' : 'Remove-Mailbox');
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      ids.push(r.body.id);
    }
    const refused = await create('flood@contoso.com');
    expect(refused.status).toBe(429);
    expect(refused.body.error.code).toBe('TooManyRequests');
    expect(refused.body.error.message).toMatch(/20 pending requests.*\(20\).*cancel/);
    // Nothing was created or audited for the refusal.
    const mine = await api(gw.controlUrl, 'GET', '/api/requests?status=pending', await tok('flood@contoso.com'));
    expect((mine.body as unknown[]).length).toBe(20);

    expect((await create('calm@contoso.com')).status).toBe(201);

    // A cancel or a decision frees a slot; then the cap holds again.
    expect((await decide(gw.controlUrl, 'cancel', 'flood@contoso.com', ids[0]!)).status).toBe(200);
    expect((await create('flood@contoso.com')).status).toBe(201);
    expect((await create('flood@contoso.com')).status).toBe(429);
    expect((await decide(gw.controlUrl, 'deny', 'alice@contoso.com', ids[1]!)).status).toBe(200);
    expect((await create('flood@contoso.com')).status).toBe(201);
    expect((await create('flood@contoso.com')).status).toBe(429);
  });

  it('concurrent requests cannot overshoot the cap: each counts from the moment it is filed', async () => {
    const replies = await Promise.all(Array.from({ length: 40 }, () => create('burst@contoso.com')));
    expect(replies.filter((r) => r.status === 201)).toHaveLength(20);
    expect(replies.filter((r) => r.status === 429)).toHaveLength(20);
    expect((await create('burst@contoso.com')).status).toBe(429);
  });

  it('pending requests that expired unanswered do not count', async () => {
    for (let i = 0; i < 20; i++) expect((await create('late@contoso.com')).status).toBe(201);
    expect((await create('late@contoso.com')).status).toBe(429);
    gw.clock.advanceHours(25); // pendingExpiryHours: 24
    expect((await create('late@contoso.com')).status).toBe(201);
  });
});

describe('auto-approved grants per user are capped', () => {
  let gw: InProcGateway;
  beforeAll(async () => {
    gw = await startStateGateway({ policies: STATE_POLICIES.replace('settings:\n', 'settings:\n  maxActiveGrantsPerUser: 3\n'), upstreamUrl: upstream.url });
    dirs.push(gw.dataDir);
  });
  afterAll(async () => {
    await gw?.close();
  });

  const create = async (user: string, task: string) => api(gw.controlUrl, 'POST', '/api/requests', await token(user, { expiresInSeconds: 48 * 3600 }), { task, reason: 'cap test' });

  it('an auto policy stops approving at once while the user holds the cap; approvers are not capped; revoking or expiry frees a slot', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await create('minter@contoso.com', 'Search-Mailbox');
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      expect(r.body.status).toBe('approved');
      ids.push(r.body.id);
    }
    const refused = await create('minter@contoso.com', 'Search-Mailbox');
    expect(refused.status).toBe(429);
    expect(refused.body.error.code).toBe('TooManyRequests');
    expect(refused.body.error.message).toMatch(/hold 3 active grants.*\(3\)/);
    const mine = await api(gw.controlUrl, 'GET', '/api/requests', await tok('minter@contoso.com'));
    expect((mine.body as unknown[]).length).toBe(3); // the refusal created nothing
    expect((await create('other@contoso.com', 'Search-Mailbox')).status).toBe(201);

    // An approver's decision is not capped: a fourth grant through approval.
    const manual = await create('minter@contoso.com', 'New-JournalRule');
    expect(manual.status).toBe(201);
    expect((await decide(gw.controlUrl, 'approve', 'alice@contoso.com', manual.body.id)).body.status).toBe('approved');
    expect((await create('minter@contoso.com', 'Search-Mailbox')).status).toBe(429);

    // Revoking two of the four leaves 2 < 3: one more at once, then the cap holds again.
    expect((await decide(gw.controlUrl, 'revoke', 'root@contoso.com', ids[0]!)).status).toBe(200);
    expect((await decide(gw.controlUrl, 'revoke', 'root@contoso.com', ids[1]!)).status).toBe(200);
    expect((await create('minter@contoso.com', 'Search-Mailbox')).status).toBe(201);
    expect((await create('minter@contoso.com', 'Search-Mailbox')).status).toBe(429);

    gw.clock.advanceHours(5); // grants last 4 h
    for (let i = 0; i < 3; i++) expect((await create('minter@contoso.com', 'Search-Mailbox')).status).toBe(201);
    expect((await create('minter@contoso.com', 'Search-Mailbox')).status).toBe(429);

    // Filed all at once, they still stop at the cap.
    const replies = await Promise.all(Array.from({ length: 12 }, () => create('burst-minter@contoso.com', 'Search-Mailbox')));
    expect(replies.filter((r) => r.status === 201)).toHaveLength(3);
    expect(replies.filter((r) => r.status === 429)).toHaveLength(9);
  });
});

describe('embedded journal values', () => {
  it('gives back exactly what was set, before and after a reopen: non-ASCII text, lone surrogates, non-string JSON; refuses Buffers', async () => {
    const dir = await tempDir();
    dirs.push(dir);
    const file = join(dir, 'state.journal');
    const values: Record<string, unknown> = {
      ascii: '{"value":{"id":"r1"},"expires":null}',
      utf8: 'Zoë — 東京 — 🔐',
      lone: 'a\ud800b\udc00',
      empty: '',
      object: { n: 1, s: 'ü' },
      number: 42,
    };
    let store = await JournalStore.open(file);
    try {
      for (const [k, v] of Object.entries(values)) await store.set(k, v);
      for (const [k, v] of Object.entries(values)) expect(await store.get(k)).toEqual(v);
      await expect(store.set('buffer', Buffer.from('x'))).rejects.toThrow(/not Buffers/);
      expect(await store.get('buffer')).toBeUndefined();
      expect([...store.keys()].sort()).toEqual(Object.keys(values).sort());
    } finally {
      await store.disconnect();
    }
    store = await JournalStore.open(file);
    try {
      for (const [k, v] of Object.entries(values)) expect(await store.get(k)).toEqual(v);
    } finally {
      await store.disconnect();
    }
  });
});

describe('embedded journal larger than the longest string', () => {
  it('opens a journal over 512 MiB (line by line) and compacts it (in chunks) when its live data is that large too', async () => {
    // On tmpfs when there is one: the size is the point here, not the disk.
    const dir = existsSync('/dev/shm') ? await mkdtemp(join('/dev/shm', 'pamgate-journal-')) : await tempDir();
    dirs.push(dir);
    const file = join(dir, 'state.journal');
    // V8 cannot hold a string longer than 2^29 - 24 characters (~512 MiB). Build a journal of
    // ~600 MiB of distinct keys (so compaction must write all of it back), plus an overwritten
    // key, a deleted key and a torn last line.
    const value = 'x'.repeat(2_000);
    const KEYS = 270_000;
    const fh = await open(file, 'w');
    try {
      let chunk: string[] = [];
      for (let i = 0; i < KEYS; i++) {
        chunk.push(JSON.stringify({ k: `pamgate:req:${i}`, v: value }) + '\n');
        if (chunk.length === 4_096) {
          await fh.writeFile(chunk.join(''));
          chunk = [];
        }
      }
      chunk.push(JSON.stringify({ k: 'pamgate:req:0', v: 'overwritten' }) + '\n');
      chunk.push(JSON.stringify({ k: 'pamgate:req:1', d: 1 }) + '\n');
      chunk.push('{"k":"pamgate:req:torn","v":"nev');
      await fh.writeFile(chunk.join(''));
    } finally {
      await fh.close();
    }
    const size = (await stat(file)).size;
    expect(size).toBeGreaterThan(2 ** 29);

    const store = await JournalStore.open(file);
    try {
      expect(await store.get('pamgate:req:0')).toBe('overwritten');
      expect(await store.get('pamgate:req:1')).toBeUndefined();
      expect(await store.get('pamgate:req:torn')).toBeUndefined();
      expect(await store.get(`pamgate:req:${KEYS - 1}`)).toBe(value);
      let n = 0;
      for (const _ of store.keys('pamgate:req:')) n++;
      expect(n).toBe(KEYS - 1);
      // Compacted: exactly one line per live key (still over the string limit), and it keeps working.
      let expected = 0;
      for (let i = 0; i < KEYS; i++) if (i !== 1) expected += Buffer.byteLength(JSON.stringify({ k: `pamgate:req:${i}`, v: i === 0 ? 'overwritten' : value }) + '\n');
      expect(expected).toBeGreaterThan(2 ** 29);
      expect((await stat(file)).size).toBe(expected);
      await store.set('pamgate:req:after', 'ok');
    } finally {
      await store.disconnect();
    }
    const tailText = JSON.stringify({ k: `pamgate:req:${KEYS - 1}`, v: value }) + '\n' + JSON.stringify({ k: 'pamgate:req:after', v: 'ok' }) + '\n';
    const tail = Buffer.alloc(Buffer.byteLength(tailText));
    const rh = await open(file, 'r');
    try {
      await rh.read(tail, 0, tail.length, (await rh.stat()).size - tail.length);
    } finally {
      await rh.close();
    }
    expect(tail.toString()).toBe(tailText);
    await writeFile(file, ''); // free the disk space now
  }, 120_000);
});
