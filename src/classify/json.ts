/**
 * A strict JSON reader for classification. It differs from JSON.parse in one way that
 * matters: two object keys that any lenient reader could take for the same property
 * (exact duplicates, or keys equal when case-folded) make the document ambiguous, and
 * an ambiguous document is rejected rather than guessed at.
 */

export class JsonAmbiguityError extends Error {}

export type JsonValue = string | number | boolean | null | JsonValue[] | JsonObject;
/** Object keys are folded with foldKey(); the original spelling is not kept. */
export type JsonObject = Map<string, JsonValue>;

/**
 * What a culture-aware comparison (ICU, .NET's InvariantCulture) skips when it matches names:
 * format and control characters, and the other default-ignorable code points (U+034F, variation
 * selectors, U+180B–D…).
 */
export const IGNORABLE = /[\p{Cf}\p{Cc}\p{Default_Ignorable_Code_Point}]/gu;

/** Folds a property name to the widest equivalence any lenient reader could apply (case, width, invisible characters). */
export function foldKey(key: string): string {
  return /^[\x20-\x7e]*$/.test(key) ? key.toLowerCase() : key.normalize('NFKC').replace(IGNORABLE, '').toUpperCase().toLowerCase();
}

const MAX_DEPTH = 64;
/** A run of string characters that need no unescaping: one character class, so matched in linear time (and far faster than a charCodeAt loop). */
const PLAIN_RUN = /[^"\\\u0000-\u001f]*/y;
const HEX4 = /^[0-9a-fA-F]{4}$/;

export function parseStrictJson(text: string): JsonValue {
  const p = new Parser(text);
  p.ws();
  const value = p.value(0);
  p.ws();
  if (p.i !== text.length) p.fail('unexpected data after the JSON value');
  return value;
}

class Parser {
  i = 0;
  constructor(private readonly s: string) {}

  fail(what: string): never {
    throw new SyntaxError(`${what} at offset ${this.i}`);
  }

  ws(): void {
    const s = this.s;
    let c = s.charCodeAt(this.i);
    while (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) c = s.charCodeAt(++this.i);
  }

  value(depth: number): JsonValue {
    if (depth > MAX_DEPTH) this.fail('nesting too deep');
    const c = this.s[this.i];
    if (c === '{') return this.object(depth);
    if (c === '[') return this.array(depth);
    if (c === '"') return this.string();
    if (c === 't') return this.literal('true', true);
    if (c === 'f') return this.literal('false', false);
    if (c === 'n') return this.literal('null', null);
    return this.number();
  }

  object(depth: number): JsonObject {
    const out: JsonObject = new Map();
    this.i++;
    this.ws();
    if (this.s[this.i] === '}') {
      this.i++;
      return out;
    }
    for (;;) {
      if (this.s[this.i] !== '"') this.fail('expected a property name');
      const key = foldKey(this.string());
      if (out.has(key)) throw new JsonAmbiguityError(`property "${key}" appears more than once (keys compare case-insensitively)`);
      this.ws();
      if (this.s[this.i] !== ':') this.fail('expected ":"');
      this.i++;
      this.ws();
      out.set(key, this.value(depth + 1));
      this.ws();
      const c = this.s[this.i++];
      if (c === '}') return out;
      if (c !== ',') this.fail('expected "," or "}"');
      this.ws();
    }
  }

  array(depth: number): JsonValue[] {
    const out: JsonValue[] = [];
    this.i++;
    this.ws();
    if (this.s[this.i] === ']') {
      this.i++;
      return out;
    }
    for (;;) {
      out.push(this.value(depth + 1));
      this.ws();
      const c = this.s[this.i++];
      if (c === ']') return out;
      if (c !== ',') this.fail('expected "," or "]"');
      this.ws();
    }
  }

  string(): string {
    const s = this.s;
    let j = this.i + 1;
    let out = '';
    for (;;) {
      PLAIN_RUN.lastIndex = j;
      PLAIN_RUN.test(s);
      const runEnd = PLAIN_RUN.lastIndex;
      out += s.slice(j, runEnd);
      const c = s.charCodeAt(runEnd);
      if (c === 0x22) {
        this.i = runEnd + 1;
        return out;
      }
      if (Number.isNaN(c)) {
        this.i = runEnd;
        this.fail('unterminated string');
      }
      if (c !== 0x5c) {
        this.i = runEnd;
        this.fail('control character in string');
      }
      const e = s[runEnd + 1];
      j = runEnd + 2;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          const hex = s.slice(j, j + 4);
          if (!HEX4.test(hex)) {
            this.i = j;
            this.fail('bad \\u escape');
          }
          out += String.fromCharCode(parseInt(hex, 16));
          j += 4;
          break;
        }
        default:
          this.i = runEnd;
          this.fail('bad escape');
      }
    }
  }

  literal<T>(word: string, value: T): T {
    if (!this.s.startsWith(word, this.i)) this.fail('unexpected token');
    this.i += word.length;
    return value;
  }

  number(): number {
    const m = /-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;
    m.lastIndex = this.i;
    const hit = m.exec(this.s);
    if (!hit) this.fail('unexpected token');
    this.i += hit[0].length;
    return Number(hit[0]);
  }
}
