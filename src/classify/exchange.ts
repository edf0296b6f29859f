import type { Command } from '../policy/decide.js';
import { defaultVerbReading, taskKey } from '../policy/names.js';
import { BodyError, decodeContent, decodeText } from './decode.js';
import { IGNORABLE, JsonAmbiguityError, parseStrictJson, type JsonObject, type JsonValue } from './json.js';
import { isGateableTarget } from './path.js';
import { unescapeUnicode } from './unescape.js';

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
  /** Targets from headers some servers route on instead of the request line (X-Original-URL…). */
  alternateUrls?: readonly string[];
  contentType: string | undefined;
  contentEncoding: string | undefined;
}

const PASS: Classification = Object.freeze({ kind: 'pass' });
const MAX_NESTED_DOCUMENTS = 16;

export function classifyExchange(head: RequestHead, body: Buffer, maxBytes: number): Classification {
  if (!mayRunCommands(head)) return PASS;
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

/** Whether the request's target (or a target it could be routed on instead) may reach an endpoint that runs commands. */
export function mayRunCommands(head: Pick<RequestHead, 'url' | 'alternateUrls'>): boolean {
  if (isGateableTarget(head.url) || queryMentionsCmdlet(head.url)) return true;
  return head.alternateUrls !== undefined && head.alternateUrls.some((url) => isGateableTarget(url) || queryMentionsCmdlet(url));
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
function collectCommands(value: JsonValue, out: Command[], budget: { nested: number }, isParameters = false): void {
  if (Array.isArray(value)) {
    for (const item of value) collectCommands(item, out, budget);
    return;
  }
  if (value instanceof Map) {
    // Any object with a body may be a batch request, whatever else it has; a command's own Parameters are not.
    if (!isParameters && value.has('body')) checkBatchRequest(value);
    const isCommand = value.has('cmdletname');
    if (isCommand) pushReadings(toCommand(value), out);
    for (const [key, child] of value) {
      if (key !== 'cmdletname') collectCommands(child, out, budget, isCommand && key === 'parameters');
    }
    return;
  }
  if (typeof value === 'string') {
    const inner = nestedDocument(value, budget);
    if (inner !== undefined) collectCommands(inner, out, budget);
  }
}

/** Media types whose batch body is the JSON or text itself; any other is base64url bytes (OData JSON Format 4.01 §19.1). */
const JSON_OR_TEXT = /^\s*(application\/([\w.+-]*\+)?json|text\/[\w.+-]+)\s*(;|$)/i;

/**
 * A JSON batch request object (`{"method","url","headers","body"}`). Its body is read here only
 * as JSON. One the dispatcher would first base64url-decode (a string body, unless text/*: what
 * Microsoft's OData reader does; or any non-JSON, non-text media type) or decompress (a
 * content-encoding), or text in another charset, could hold any command: refused.
 */
function checkBatchRequest(request: JsonObject): void {
  const headers = request.get('headers');
  let contentType: string | undefined;
  if (headers !== undefined && headers !== null) {
    if (!(headers instanceof Map)) throw new JsonAmbiguityError('the headers of a batch request must be an object');
    for (const [key, value] of headers) {
      const name = key.trim().replace(/_/g, '-'); // as CGI-style servers read header names
      if ((name === 'content-encoding' || name === 'transfer-encoding') && !(typeof value === 'string' && /^\s*(identity\s*)?$/i.test(value))) {
        throw new JsonAmbiguityError(`a batch request with ${name} ${JSON.stringify(value)}: only plain JSON bodies can be read`);
      }
      if (name !== 'content-type') continue;
      if (typeof value !== 'string' || !JSON_OR_TEXT.test(value)) throw new JsonAmbiguityError(`a batch request with content-type ${JSON.stringify(value)}: its body would be read as base64url bytes`);
      const charset = /;\s*charset\s*=\s*"?([^";\s]*)/i.exec(value)?.[1]?.toLowerCase();
      if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8') throw new JsonAmbiguityError(`a batch request with charset ${JSON.stringify(charset)}: send UTF-8`);
      if (contentType !== undefined && contentType !== value) throw new JsonAmbiguityError('a batch request with two different content-types');
      contentType = value;
    }
  }
  const body = request.get('body');
  if (typeof body !== 'string') return;
  if (contentType === undefined || !/^\s*text\//i.test(contentType)) {
    throw new JsonAmbiguityError('a batch request body given as a string is base64url unless its content-type is text/*: send the JSON body as an object');
  }
  try {
    parseStrictJson(body.trim());
  } catch {
    throw new JsonAmbiguityError('a batch request body given as text must be a JSON document');
  }
}

/**
 * A string value that is itself a JSON document (batch bodies, double-encoded inputs).
 * A string that could name a command once unescaped but is not readable JSON is ambiguous.
 */
function nestedDocument(value: string, budget: { nested: number }): JsonValue | undefined {
  const text = value.trim();
  const first = text.charCodeAt(0);
  const looksLikeJson = first === 0x7b /* { */ || first === 0x5b /* [ */ || first === 0x22; /* " */
  const mentions = mentionsCmdletName(value);
  if (!looksLikeJson && !mentions) return undefined;
  let inner: JsonValue;
  try {
    inner = parseStrictJson(text);
  } catch (err) {
    if (mentions) throw new JsonAmbiguityError(`a string value mentions CmdletName but is not readable JSON (${(err as Error).message})`);
    return undefined;
  }
  if (typeof inner !== 'object' && typeof inner !== 'string') return undefined;
  if (++budget.nested > MAX_NESTED_DOCUMENTS) throw new JsonAmbiguityError('too many nested JSON documents');
  return inner;
}

/** Whether any reader that unescapes, widens and case-folds could find "CmdletName" in `s`. */
function mentionsCmdletName(s: string): boolean {
  if (/cmdletname/i.test(s)) return true;
  if (!/[\\\u0080-\uffff]/.test(s)) return false;
  let t = s;
  // \\u0043 inside a string inside a string unescapes one level per parse.
  for (let round = 0; round < MAX_NESTED_DOCUMENTS && t.includes('\\'); round++) {
    const next = unescapeUnicode(t);
    if (next === null) break;
    t = next;
  }
  return /cmdletname/.test(
    t
      .replace(/\\/g, '')
      .normalize('NFKC')
      .replace(IGNORABLE, '')
      .toUpperCase()
      .toLowerCase(),
  );
}

// After taskKey(): what a cmdlet name may be. Anything else could resolve differently upstream.
const PLAIN_TASK_KEY = /^[a-z0-9_]+(-[a-z0-9_]+)*$/;
const INVISIBLE = /[\p{Cc}\p{Cf}]/u;

/** The command, and the other command the upstream's discovery could take its name for. */
function pushReadings(command: Command, out: Command[]): void {
  out.push(command);
  const reading = defaultVerbReading(command.name, command.key);
  if (reading !== null) out.push({ name: reading.name, key: reading.key, calledAs: command.name, params: command.params });
}

function toCommand(input: JsonObject): Command {
  const name = input.get('cmdletname');
  if (typeof name !== 'string' || name.trim() === '') throw new JsonAmbiguityError('CmdletName must be a non-empty string');
  const key = taskKey(name);
  if (!PLAIN_TASK_KEY.test(key)) throw new JsonAmbiguityError(`CmdletName ${JSON.stringify(name)} is not a plain cmdlet name`);
  if (INVISIBLE.test(name)) throw new JsonAmbiguityError(`CmdletName ${JSON.stringify(name)} contains invisible or control characters`);
  return { name, key, params: toParams(input.get('parameters')) };
}

/** Parameters by the name PowerShell would bind them to; two spellings of one name are ambiguous. */
function toParams(raw: JsonValue | undefined): Map<string, unknown> {
  const params = new Map<string, unknown>();
  if (raw === undefined || raw === null) return params;
  if (!(raw instanceof Map)) throw new JsonAmbiguityError('CmdletInput.Parameters must be an object');
  for (const [key, value] of raw) {
    const name = parameterName(key);
    if (params.has(name)) throw new JsonAmbiguityError(`parameter "${name}" appears more than once`);
    params.set(name, plain(value));
  }
  return params;
}

const DASHES = /[-\u2010-\u2015\u2212\ufe58\ufe63\uff0d]/;

/** `-Identity`, `–Identity` and `Identity` bind to the same parameter. `key` is already folded. */
function parameterName(key: string): string {
  if (/^[a-z0-9_]+$/.test(key)) return key;
  let name = key.trim();
  while (name.length > 0 && DASHES.test(name[0]!)) name = name.slice(1).trimStart();
  return name;
}

/** Parameter values as plain JSON (objects become records) for rule checks and audit. */
function plain(value: JsonValue): unknown {
  if (value instanceof Map) return Object.fromEntries([...value].map(([k, v]) => [k, plain(v)]));
  if (Array.isArray(value)) return value.map(plain);
  return value;
}
