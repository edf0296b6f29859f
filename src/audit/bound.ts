import type { AuditEvent } from './log.js';

/**
 * What one audit event may record. Clients decide much of what goes into an event (parameters and
 * their names, task names, the user name in their token, text quoted in error messages), and every
 * refusal writes one, so every event the proxy, the control API and notifications record passes
 * through boundedAudit: each string (value or member name)
 * is cut to AUDIT_VALUE_MAX_CHARS, and the event's JSON to about AUDIT_EVENT_MAX_BYTES, past which
 * members and array elements are dropped. A cut event says so in `truncated`:
 * `{"values": <strings cut>, "dropped": <members and elements left out>}`; a cut string ends with
 * `…[cut: <original length> chars]`.
 */
export const AUDIT_VALUE_MAX_CHARS = 256;
export const AUDIT_EVENT_MAX_BYTES = 16 * AUDIT_VALUE_MAX_CHARS;
/** Objects nested deeper than this are recorded as a marker string. */
const MAX_DEPTH = 8;
/** Longest JSON text of a number (e.g. -2.2250738585072014e-308). */
const NUMBER_COST = 24;
/** Written by the writer and read by readers as they are; never cut. */
const KEPT_WHOLE: ReadonlySet<string> = new Set(['type', 'seq', 'time', 'prev', 'hash']);

export interface AuditSink {
  append(event: AuditEvent): Promise<void>;
}

/**
 * The writer as the gateway's components see it: each event bounded, then appended. The writer
 * itself (log.ts) takes lines of any size; the gateway's own events (start-up, policy loads) and the
 * writer's recovery records do not come from clients and go to it directly.
 */
export function boundedAudit(log: AuditSink): AuditSink {
  return { append: (event) => log.append(boundEvent(event)) };
}

interface Tally {
  values: number;
  dropped: number;
}

/**
 * The event itself when it is within the bounds (the common case: nothing is copied), otherwise a
 * bounded copy carrying `truncated`. Top-level fields that are not objects or arrays (actor, task,
 * remote, reason, …: a fixed set the gateway chooses) are always kept, cut; objects and arrays share
 * what is left of the budget, in the event's order.
 */
export function boundEvent<T extends Record<string, unknown>>(event: T): T {
  if (cost(event, 0) <= AUDIT_EVENT_MAX_BYTES) return event;
  const tally: Tally = { values: 0, dropped: 0 };
  const out: Record<string, unknown> = {};
  let used = 2;
  const containers: string[] = [];
  for (const key in event) {
    if (!Object.prototype.hasOwnProperty.call(event, key)) continue;
    const value = jsonValue(event[key], key);
    if (KEPT_WHOLE.has(key)) {
      out[key] = value;
      continue;
    }
    if (typeof value === 'object' && value !== null) {
      containers.push(key);
      out[key] = undefined; // keeps the event's order
      continue;
    }
    const kept = typeof value === 'string' ? cutString(value, tally) : value;
    out[key] = kept;
    used += stringCost(key) + 2 + scalarCost(kept);
  }
  for (const key of containers) {
    const room = AUDIT_EVENT_MAX_BYTES - used - stringCost(key) - 2;
    const kept = room >= 2 ? cutContainer(jsonValue(event[key], key) as object, 1, room, tally) : null;
    if (kept === null) {
      delete out[key];
      tally.dropped++;
      continue;
    }
    out[key] = kept.value;
    used += stringCost(key) + 2 + kept.cost;
  }
  if (tally.values === 0 && tally.dropped === 0) return event;
  out['truncated'] = tally;
  return out as T;
}

/** What JSON.stringify would serialise in place of `value` (its toJSON, if it has one). */
function jsonValue(value: unknown, key: string): unknown {
  if (typeof value === 'object' && value !== null && typeof (value as { toJSON?: unknown }).toJSON === 'function') {
    return (value as { toJSON(key: string): unknown }).toJSON(key);
  }
  return value;
}

/** An upper bound on the bytes of `value`'s JSON, or Infinity when it holds a string over the limit or nests too deep. */
function cost(value: unknown, depth: number): number {
  if (typeof value === 'string') return value.length > AUDIT_VALUE_MAX_CHARS ? Infinity : stringCost(value);
  if (typeof value !== 'object' || value === null) return scalarCost(value);
  if (depth > MAX_DEPTH) return Infinity;
  const v = jsonValue(value, '');
  if (typeof v !== 'object' || v === null) return cost(v, depth);
  let total = 2;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      total += cost(v[i], depth + 1) + 1;
      if (total > AUDIT_EVENT_MAX_BYTES) return Infinity;
    }
    return total;
  }
  for (const key in v) {
    if (!Object.prototype.hasOwnProperty.call(v, key)) continue;
    if (key.length > AUDIT_VALUE_MAX_CHARS) return Infinity;
    total += stringCost(key) + 2 + cost((v as Record<string, unknown>)[key], depth + 1);
    if (total > AUDIT_EVENT_MAX_BYTES) return Infinity;
  }
  return total;
}

function scalarCost(value: unknown): number {
  switch (typeof value) {
    case 'string':
      return stringCost(value);
    case 'number':
    case 'bigint':
      return NUMBER_COST;
    case 'boolean':
      return 5;
    default:
      return 4; // null; undefined, functions and symbols are left out or written as null
  }
}

/** Bytes of the JSON string literal, escapes and UTF-8 included (lone surrogates counted as their \u escape). */
function stringCost(s: string): number {
  let n = 2;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    n += c < 0x20 ? 6 : c === 0x22 || c === 0x5c ? 2 : c < 0x80 ? 1 : c < 0x800 ? 2 : c >= 0xd800 && c <= 0xdfff ? 6 : 3;
  }
  return n;
}

function cutString(s: string, tally: Tally): string {
  if (s.length <= AUDIT_VALUE_MAX_CHARS) return s;
  tally.values++;
  let end = AUDIT_VALUE_MAX_CHARS;
  const last = s.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--; // never split a surrogate pair
  return s.slice(0, end) + `…[cut: ${s.length} chars]`;
}

/** A bounded copy of an object or array in at most `room` bytes, or null when not even an empty one fits. */
function cutContainer(value: object, depth: number, room: number, tally: Tally): { value: unknown; cost: number } | null {
  if (room < 2) return null;
  if (depth > MAX_DEPTH) {
    const marker = `[cut: nested deeper than ${MAX_DEPTH}]`;
    if (stringCost(marker) > room) return null;
    tally.values++;
    return { value: marker, cost: stringCost(marker) };
  }
  let used = 2;
  if (Array.isArray(value)) {
    const out: unknown[] = [];
    for (let i = 0; i < value.length; i++) {
      const kept = cutMember(jsonValue(value[i], String(i)), depth, room - used - 1, tally);
      if (kept === null) {
        tally.dropped += value.length - i;
        break;
      }
      out.push(kept.value);
      used += kept.cost + 1;
    }
    return { value: out, cost: used };
  }
  // Null prototype: a member named "__proto__" stays a member.
  const out: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  const keys = Object.keys(value);
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!;
    const v = jsonValue((value as Record<string, unknown>)[key], key);
    if (v === undefined || typeof v === 'function' || typeof v === 'symbol') continue; // JSON leaves them out
    const name = cutString(key, tally);
    const nameCost = stringCost(name) + 2;
    const kept = cutMember(v, depth, room - used - nameCost, tally);
    if (kept === null) {
      tally.dropped += keys.length - i;
      break;
    }
    if (name in out) {
      tally.dropped++; // two long names that agree up to the cut
      continue;
    }
    out[name] = kept.value;
    used += nameCost + kept.cost;
  }
  return { value: out, cost: used };
}

function cutMember(value: unknown, depth: number, room: number, tally: Tally): { value: unknown; cost: number } | null {
  if (typeof value === 'object' && value !== null) return cutContainer(value, depth + 1, room, tally);
  const values = tally.values;
  const kept = typeof value === 'string' ? cutString(value, tally) : value;
  const c = scalarCost(kept);
  if (c > room) {
    tally.values = values; // not cut after all: left out
    return null;
  }
  return { value: kept, cost: c };
}
