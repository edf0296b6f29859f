import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PackedMap } from '../../src/grants/packed-map.js';

const MiB = 1 << 20;

describe('PackedMap', () => {
  it('gives back what was set: text (non-ASCII, lone surrogates, empty), JSON values, nested objects', () => {
    const map = new PackedMap();
    const values: Record<string, unknown> = {
      ascii: '{"value":{"id":"r1"},"expires":null}',
      utf8: 'Zoë — 東京 — 🔐',
      lone: 'a\ud800b\udc00',
      empty: '',
      object: { n: 1, s: 'ü', list: [1, null, 'x'], nested: { deep: true } },
      number: 42,
      nil: null,
    };
    for (const [k, v] of Object.entries(values)) map.set(k, v);
    for (const [k, v] of Object.entries(values)) expect(map.get(k)).toEqual(v);
    expect(map.size).toBe(Object.keys(values).length);
    expect([...map.keys()]).toEqual(Object.keys(values));
    expect(Object.fromEntries(map.entries())).toEqual(values);
    expect([...map.values()]).toEqual(Object.values(values));
    expect(map.get('missing')).toBeUndefined();
    expect(map.has('nil')).toBe(true);
  });

  it('hands out a fresh copy on every read: changing it changes nothing stored', () => {
    const map = new PackedMap<{ approvals: string[] }>();
    map.set('r', { approvals: ['a'] });
    map.get('r')!.approvals.push('b');
    expect(map.get('r')).toEqual({ approvals: ['a'] });
    expect(map.get('r')).not.toBe(map.get('r'));
  });

  it('refuses a value with no JSON text and keeps what the key held', () => {
    const map = new PackedMap<unknown>();
    map.set('k', 'before');
    expect(() => map.set('k', undefined)).toThrow(/not a JSON value/);
    expect(() => map.set('k', () => 1)).toThrow(/not a JSON value/);
    expect(() => map.set('k', 10n)).toThrow(TypeError);
    expect(map.get('k')).toBe('before');
    expect(map.size).toBe(1);
  });

  it('replaces and deletes; keeps insertion order as a Map does', () => {
    const map = new PackedMap<string>();
    map.set('a', '1').set('b', '2').set('c', '3');
    map.set('a', 'one');
    expect(map.delete('b')).toBe(true);
    expect(map.delete('b')).toBe(false);
    expect([...map.entries()]).toEqual([['a', 'one'], ['c', '3']]);
    map.clear();
    expect(map.size).toBe(0);
    expect(map.get('a')).toBeUndefined();
    expect(map.bytes()).toEqual({ held: 0, live: 0 });
  });

  it('holds values larger than a slab, and small ones after them', () => {
    const map = new PackedMap<string>();
    const big = 'é'.repeat(MiB); // 2 MiB of UTF-8
    map.set('small1', 'x');
    map.set('big', big);
    map.set('small2', 'y');
    expect(map.get('big')).toBe(big);
    expect(map.get('small1')).toBe('x');
    expect(map.get('small2')).toBe('y');
  });

  it('compacts once garbage outweighs the live bytes, and every value survives it', () => {
    const map = new PackedMap<{ id: number; pad: string }>();
    const pad = 'p'.repeat(1000);
    for (let i = 0; i < 3000; i++) map.set(`k${i}`, { id: i, pad });
    const { held: heldAfterFill, live } = map.bytes();
    expect(heldAfterFill).toBeGreaterThanOrEqual(live);
    // Rewrite every value many times over: without compaction this would hold ~10× the live bytes.
    for (let round = 1; round <= 10; round++) for (let i = 0; i < 3000; i++) map.set(`k${i}`, { id: i * round, pad });
    const { held, live: liveNow } = map.bytes();
    expect(liveNow).toBeGreaterThan(0);
    expect(held).toBeLessThanOrEqual(2 * liveNow + 2 * MiB);
    for (let i = 0; i < 3000; i++) expect(map.get(`k${i}`)).toEqual({ id: i * 10, pad });
    expect([...map.keys()].slice(0, 3)).toEqual(['k0', 'k1', 'k2']);
    // Deleting most of them also gives the bytes back.
    for (let i = 100; i < 3000; i++) map.delete(`k${i}`);
    expect(map.bytes().held).toBeLessThanOrEqual(2 * map.bytes().live + 2 * MiB);
    for (let i = 0; i < 100; i++) expect(map.get(`k${i}`)).toEqual({ id: i * 10, pad });
  });

  it('finds every one of many keys, through growth, deletions and re-insertions', () => {
    const map = new PackedMap<number>();
    for (let i = 0; i < 20_000; i++) map.set(`pamgate:req:${i}`, i);
    for (let i = 0; i < 20_000; i += 2) expect(map.delete(`pamgate:req:${i}`)).toBe(true);
    for (let i = 0; i < 20_000; i += 4) map.set(`pamgate:req:${i}`, 1e6 + i); // back in, at the end
    expect(map.size).toBe(15_000);
    for (let i = 0; i < 20_000; i++) {
      const want = i % 2 === 1 ? i : i % 4 === 0 ? 1e6 + i : undefined;
      expect(map.get(`pamgate:req:${i}`)).toBe(want);
      expect(map.has(`pamgate:req:${i}`)).toBe(want !== undefined);
    }
    const keys = [...map.keys()];
    expect(keys.slice(0, 2)).toEqual(['pamgate:req:1', 'pamgate:req:3']);
    expect(keys.at(-1)).toBe('pamgate:req:19996');
    expect(map.get('pamgate:req:20000')).toBeUndefined();
  });

  it('keeps keys apart that UTF-8 alone would not (lone surrogates, U+FFFD), and non-ASCII keys', () => {
    const map = new PackedMap<string>();
    const keys = ['a\ud800', 'a\ufffd', 'a\udc00', 'Zoë', '東京', '🔐', ''];
    keys.forEach((k, i) => map.set(k, `v${i}`));
    keys.forEach((k, i) => expect(map.get(k)).toBe(`v${i}`));
    expect([...map.keys()]).toEqual(keys);
    map.compact();
    expect([...map.entries()]).toEqual(keys.map((k, i) => [k, `v${i}`]));
  });

  it('refuses to go on iterating once compaction renumbered the entries', () => {
    const map = new PackedMap<number>();
    for (let i = 0; i < 10; i++) map.set(`k${i}`, i);
    const keys = map.keys();
    expect(keys.next().value).toBe('k0');
    map.compact();
    expect(() => keys.next()).toThrow(/compacted while being iterated/);
  });

  it('behaves as a Map of JSON copies under any sequence of sets and deletes (model check)', () => {
    const key = fc.constantFrom('a', 'b', 'c', 'd', 'e');
    const value = fc.oneof(fc.string({ unit: 'binary' }), fc.jsonValue(), fc.string({ minLength: 2000, maxLength: 5000 }));
    const op = fc.oneof(fc.tuple(fc.constant('set' as const), key, value), fc.tuple(fc.constant('delete' as const), key, fc.constant(null)));
    fc.assert(
      fc.property(fc.array(op, { maxLength: 400 }), (ops) => {
        const map = new PackedMap<unknown>();
        const model = new Map<string, unknown>();
        for (const [kind, k, v] of ops) {
          if (kind === 'set') {
            map.set(k, v);
            model.set(k, typeof v === 'string' ? v : JSON.parse(JSON.stringify(v)));
          } else {
            expect(map.delete(k)).toBe(model.delete(k));
          }
        }
        expect([...map.entries()]).toEqual([...model.entries()]);
        map.compact();
        expect([...map.entries()]).toEqual([...model.entries()]);
      }),
      { numRuns: 200 },
    );
  });

  it('behaves as a Map over many keys: sets, deletes, lookups and compactions in any order (model check)', () => {
    const key = fc.oneof(fc.integer({ min: 0, max: 300 }).map((i) => `u${i}@c.com`), fc.string({ unit: 'binary', maxLength: 4 }));
    const op = fc.oneof(
      fc.tuple(fc.constant('set' as const), key, fc.integer()),
      fc.tuple(fc.constant('delete' as const), key, fc.constant(0)),
      fc.tuple(fc.constant('get' as const), key, fc.constant(0)),
      fc.tuple(fc.constant('compact' as const), fc.constant(''), fc.constant(0)),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 1500 }), (ops) => {
        const map = new PackedMap<number>();
        const model = new Map<string, number>();
        for (const [kind, k, v] of ops) {
          if (kind === 'set') {
            map.set(k, v);
            model.set(k, v);
          } else if (kind === 'delete') {
            expect(map.delete(k)).toBe(model.delete(k));
          } else if (kind === 'get') {
            expect(map.get(k)).toBe(model.get(k));
            expect(map.has(k)).toBe(model.has(k));
          } else {
            map.compact();
          }
          expect(map.size).toBe(model.size);
        }
        expect([...map.entries()]).toEqual([...model.entries()]);
      }),
      { numRuns: 150 },
    );
  });
});
