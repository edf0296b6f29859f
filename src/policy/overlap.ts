import { taskKey } from './names.js';

/**
 * Set operations on the languages of policy globs over task keys: `*` any string, `?` any one
 * character, anything else itself. Decided on the patterns, never by trying task names: each
 * check is a walk over the pairs of positions in the two patterns (their lengths multiplied).
 */

const STAR = '\u0001';
const ONE = '\u0002';

/** A glob as task-key symbols: normalised like a task name; in each run of wildcards the `?`s first, then at most one `*` (`*?` ≡ `?*`, `**` ≡ `*`). */
export type GlobSymbols = readonly string[];

export function globSymbols(glob: string): GlobSymbols {
  const raw = Array.from(taskKey(glob.replace(/\*/g, STAR).replace(/\?/g, ONE)));
  const out: string[] = [];
  for (let i = 0; i < raw.length; ) {
    if (raw[i] !== STAR && raw[i] !== ONE) {
      out.push(raw[i++]!);
      continue;
    }
    let star = false;
    for (; i < raw.length && (raw[i] === STAR || raw[i] === ONE); i++) {
      if (raw[i] === STAR) star = true;
      else out.push(ONE);
    }
    if (star) out.push(STAR);
  }
  return out;
}

/** The symbols before the first wildcard. */
export function literalPrefix(g: GlobSymbols): string {
  let s = '';
  for (const c of g) {
    if (c === STAR || c === ONE) break;
    s += c;
  }
  return s;
}

/**
 * A shortest task key both globs match, or null when their languages do not meet. A search over
 * position pairs (i, j): a star may be left (no character), and a character may be read when both
 * sides accept one (a literal takes only itself; `?` and `*` take any).
 */
export function intersection(a: GlobSymbols, b: GlobSymbols): string | null {
  const width = b.length + 1;
  const size = (a.length + 1) * width;
  const prevOf = new Int32Array(size).fill(-2); // -2 unseen, -1 start
  const charOf: string[] = new Array<string>(size);
  // 0-1 BFS: leaving a star costs no character, so those states go to the front.
  const deque = new Int32Array(size * 2);
  let head = size;
  let tail = size;
  const visit = (state: number, from: number, char: string, front: boolean): void => {
    if (prevOf[state] !== -2) return;
    prevOf[state] = from;
    charOf[state] = char;
    if (front) deque[--head] = state;
    else deque[tail++] = state;
  };
  visit(0, -1, '', false);
  while (head < tail) {
    const state = deque[head++]!;
    const i = Math.floor(state / width);
    const j = state % width;
    if (i === a.length && j === b.length) return witness(state, prevOf, charOf);
    const x = a[i];
    const y = b[j];
    if (x === STAR) visit(state + width, state, '', true);
    if (y === STAR) visit(state + 1, state, '', true);
    if (x === undefined || y === undefined) continue;
    const char = x !== STAR && x !== ONE ? x : y !== STAR && y !== ONE ? y : 'x';
    if ((x === STAR || x === ONE || x === char) && (y === STAR || y === ONE || y === char)) {
      visit((x === STAR ? i : i + 1) * width + (y === STAR ? j : j + 1), state, char, false);
    }
  }
  return null;
}

function witness(end: number, prevOf: Int32Array, charOf: string[]): string {
  const chars: string[] = [];
  for (let s = end; prevOf[s]! >= 0; s = prevOf[s]!) chars.push(charOf[s]!);
  return chars.reverse().join('');
}

/**
 * Whether every task key `inner` matches, `outer` matches too, shown by matching `outer` against
 * `inner`'s symbols: a star of `outer` takes any run of them, `?` one that stands for exactly one
 * character, a literal only itself. Sound (true only when contained); patterns that nest only in
 * ways this does not see count as not nested, which makes an overlap of them an error, not a pass.
 */
export function contains(outer: GlobSymbols, inner: GlobSymbols): boolean {
  // reach[j]: outer's first i symbols can stand for inner's first j.
  let reach = new Uint8Array(inner.length + 1);
  reach[0] = 1;
  for (const x of outer) {
    const next = new Uint8Array(inner.length + 1);
    if (x === STAR) {
      let any = 0;
      for (let j = 0; j <= inner.length; j++) next[j] = any |= reach[j]!;
    } else {
      for (let j = 0; j < inner.length; j++) {
        const y = inner[j]!;
        if (reach[j] && y !== STAR && (x === ONE || x === y)) next[j + 1] = 1;
      }
    }
    reach = next;
  }
  return reach[inner.length] === 1;
}
