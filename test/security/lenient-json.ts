/**
 * The reference upstream's JSON reader, written independently of the gateway's: standard
 * JSON grammar with `\uXXXX` escapes, property names looked up case-insensitively, and the
 * LAST of several properties with the same (case-folded) name wins — as ASP.NET model
 * binding over Newtonsoft/System.Text.Json with case-insensitive options does.
 */

export type LenientValue = string | number | boolean | null | LenientValue[] | LenientObject;

export class LenientObject {
  constructor(readonly entries: ReadonlyArray<readonly [string, LenientValue]>) {}

  /** The last property whose name equals `name` ignoring case. */
  get(name: string): LenientValue | undefined {
    const want = name.toUpperCase();
    for (let i = this.entries.length - 1; i >= 0; i--) {
      const [key, value] = this.entries[i]!;
      if (key.toUpperCase() === want) return value;
    }
    return undefined;
  }
}

export function parseLenientJson(text: string): LenientValue {
  const reader = new Reader(text);
  reader.skipWs();
  const value = reader.value(0);
  reader.skipWs();
  if (reader.pos !== text.length) throw new SyntaxError(`trailing data at ${reader.pos}`);
  return value;
}

class Reader {
  pos = 0;
  constructor(private readonly text: string) {}

  skipWs(): void {
    while (this.pos < this.text.length && ' \t\r\n'.includes(this.text[this.pos]!)) this.pos++;
  }

  value(depth: number): LenientValue {
    if (depth > 200) throw new SyntaxError('too deep');
    const c = this.text[this.pos];
    if (c === '{') return this.object(depth);
    if (c === '[') return this.array(depth);
    if (c === '"') return this.string();
    for (const [word, v] of [['true', true], ['false', false], ['null', null]] as const) {
      if (this.text.startsWith(word, this.pos)) {
        this.pos += word.length;
        return v;
      }
    }
    const m = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
    m.lastIndex = this.pos;
    const hit = m.exec(this.text);
    if (!hit) throw new SyntaxError(`unexpected ${JSON.stringify(c)} at ${this.pos}`);
    this.pos += hit[0].length;
    return Number(hit[0]);
  }

  private expect(ch: string): void {
    if (this.text[this.pos] !== ch) throw new SyntaxError(`expected ${ch} at ${this.pos}`);
    this.pos++;
  }

  private object(depth: number): LenientObject {
    const entries: Array<[string, LenientValue]> = [];
    this.expect('{');
    this.skipWs();
    if (this.text[this.pos] === '}') {
      this.pos++;
      return new LenientObject(entries);
    }
    for (;;) {
      this.skipWs();
      const key = this.string();
      this.skipWs();
      this.expect(':');
      this.skipWs();
      entries.push([key, this.value(depth + 1)]);
      this.skipWs();
      if (this.text[this.pos] === ',') {
        this.pos++;
        continue;
      }
      this.expect('}');
      return new LenientObject(entries);
    }
  }

  private array(depth: number): LenientValue[] {
    const out: LenientValue[] = [];
    this.expect('[');
    this.skipWs();
    if (this.text[this.pos] === ']') {
      this.pos++;
      return out;
    }
    for (;;) {
      this.skipWs();
      out.push(this.value(depth + 1));
      this.skipWs();
      if (this.text[this.pos] === ',') {
        this.pos++;
        continue;
      }
      this.expect(']');
      return out;
    }
  }

  private string(): string {
    this.expect('"');
    let out = '';
    for (;;) {
      if (this.pos >= this.text.length) throw new SyntaxError('unterminated string');
      const c = this.text[this.pos++]!;
      if (c === '"') return out;
      if (c.charCodeAt(0) < 0x20) throw new SyntaxError('raw control character in string');
      if (c !== '\\') {
        out += c;
        continue;
      }
      const e = this.text[this.pos++];
      const simple: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
      if (e !== undefined && e in simple) {
        out += simple[e];
      } else if (e === 'u') {
        const hex = this.text.slice(this.pos, this.pos + 4);
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) throw new SyntaxError('bad \\u escape');
        out += String.fromCharCode(parseInt(hex, 16));
        this.pos += 4;
      } else {
        throw new SyntaxError(`bad escape \\${e}`);
      }
    }
  }
}
