import type { Command } from '../policy/decide.js';
import { taskKey } from '../policy/names.js';
import { BodyError, decodeContent, decodeText } from './decode.js';
import { foldKey, JsonAmbiguityError, parseStrictJson, type JsonObject, type JsonValue } from './json.js';
import { isGateablePath, normalizePath } from './path.js';

/** What the Exchange adapter made of a request. */
export type Classification =
  /** Not a route that runs commands: forward untouched. */
  | { kind: 'pass' }
  /** Every command the upstream could run from this request. */
  | { kind: 'commands'; commands: Command[] }
  /** Unreadable or ambiguous on a gateable route: answer `status`, never forward. */
  | { kind: 'reject'; status: 400 | 413; message: string };

export interface RequestHead {
  url: string;
  contentType: string | undefined;
  contentEncoding: string | undefined;
}

const PASS: Classification = Object.freeze({ kind: 'pass' });
const MAX_NESTED_DOCUMENTS = 16;

export function classifyExchange(head: RequestHead, body: Buffer, maxBytes: number): Classification {
  const path = normalizePath(head.url);
  if (!isGateablePath(path) && !queryMentionsCmdlet(head.url)) return PASS;
  try {
    const text = decodeText(decodeContent(body, head.contentEncoding, maxBytes), head.contentType);
    const commands: Command[] = [];
    collectCommands(parseStrictJson(text), commands, { nested: 0 });
    if (commands.length === 0) return reject(400, 'no CmdletInput.CmdletName found in the request body');
    return { kind: 'commands', commands };
  } catch (err) {
    if (err instanceof BodyError) return reject(err.status, err.message);
    if (err instanceof JsonAmbiguityError) return reject(400, `ambiguous JSON body: ${err.message}`);
    if (err instanceof SyntaxError) return reject(400, `body is not valid JSON: ${err.message}`);
    throw err;
  }
}

function reject(status: 400 | 413, message: string): Classification {
  return { kind: 'reject', status, message };
}

/** A command name smuggled into the query string would be a differential; treat it as gateable. */
function queryMentionsCmdlet(url: string): boolean {
  const q = url.indexOf('?');
  return q >= 0 && /cmdlet|command/i.test(safeDecode(url.slice(q)));
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * Walks the whole document. Any object with a CmdletName property is a command, wherever
 * it sits (CmdletInput, arrays of them, JSON batch envelopes), and any string that
 * itself holds such a document is read too — a superset of what an upstream could run.
 */
function collectCommands(value: JsonValue, out: Command[], budget: { nested: number }): void {
  if (Array.isArray(value)) {
    for (const item of value) collectCommands(item, out, budget);
    return;
  }
  if (value instanceof Map) {
    if (value.has('cmdletname')) out.push(toCommand(value));
    for (const [key, child] of value) {
      if (key !== 'cmdletname') collectCommands(child, out, budget);
    }
    return;
  }
  if (typeof value === 'string' && value.length > 12 && /cmdlet/i.test(value)) {
    if (++budget.nested > MAX_NESTED_DOCUMENTS) throw new JsonAmbiguityError('too many nested documents');
    let inner: JsonValue;
    try {
      inner = parseStrictJson(value.trim());
    } catch (err) {
      if (/cmdletname/i.test(value)) throw new JsonAmbiguityError(`a string value mentions CmdletName but is not readable JSON (${(err as Error).message})`);
      return;
    }
    collectCommands(inner, out, budget);
  }
}

function toCommand(input: JsonObject): Command {
  const name = input.get('cmdletname');
  if (typeof name !== 'string' || name.trim() === '') throw new JsonAmbiguityError('CmdletName must be a non-empty string');
  const rawParams = input.get('parameters');
  const params = new Map<string, unknown>();
  if (rawParams instanceof Map) {
    for (const [key, value] of rawParams) {
      // `-Identity` and `Identity` bind to the same parameter.
      const name = key.startsWith('-') ? foldKey(key.slice(1)) : key;
      if (params.has(name)) throw new JsonAmbiguityError(`parameter "${name}" appears more than once`);
      params.set(name, plain(value));
    }
  } else if (rawParams !== undefined && rawParams !== null) {
    throw new JsonAmbiguityError('CmdletInput.Parameters must be an object');
  }
  return { name, key: taskKey(name), params };
}

/** Parameter values as plain JSON (objects become records) for rule checks and audit. */
function plain(value: JsonValue): unknown {
  if (value instanceof Map) return Object.fromEntries([...value].map(([k, v]) => [k, plain(v)]));
  if (Array.isArray(value)) return value.map(plain);
  return value;
}
