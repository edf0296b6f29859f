/**
 * Cmdlet-name normalisation. Two names that PowerShell could resolve to the same
 * command must normalise to the same key, so the gateway never reads a name more
 * narrowly than the upstream does.
 */

const PLAIN_ASCII = /^[A-Za-z0-9_-]+$/;
// Dashes PowerShell's tokenizer accepts as '-' (U+2010–U+2015, U+2212) plus their compatibility forms.
const UNICODE_DASHES = /[\u2010-\u2015\u2212\uFE58\uFE63\uFF0D]/g;
// Format characters (zero-width space, joiners, BOM, bidi marks…) carry no meaning in a name.
const FORMAT_CHARS = /\p{Cf}/gu;

/** Canonical key of a task name: no module prefix, NFKC, plain dashes, case-folded. */
export function taskKey(name: string): string {
  if (PLAIN_ASCII.test(name)) return name.toLowerCase();
  let s = name.normalize('NFKC').replace(UNICODE_DASHES, '-').replace(FORMAT_CHARS, '').trim();
  const slash = Math.max(s.lastIndexOf('\\'), s.lastIndexOf('/'));
  if (slash >= 0) s = s.slice(slash + 1).trim();
  // Upper- then lower-casing folds characters such as dotless ı or long ſ the way
  // invariant-culture case-insensitive comparison does.
  return s.toUpperCase().toLowerCase();
}

/**
 * PowerShell's command discovery runs a name it finds no command for as `Get-<name>` when the
 * name has no '-' (CommandDiscovery.TryNormalSearch). Which commands exist is the upstream's
 * knowledge, not the gateway's, so such a name is read both ways. The upstream skips names with
 * a module prefix; they are read both ways too, as `Module\Get-<name>`, at no cost to plain
 * names. A name with an ASCII '-' is never given a second verb.
 */
export function defaultVerbReading(name: string, key: string): { name: string; key: string } | null {
  if (key.includes('-') && name.includes('-')) return null;
  const trimmed = name.trim();
  const cut = Math.max(trimmed.lastIndexOf('\\'), trimmed.lastIndexOf('/')) + 1;
  return { name: `${trimmed.slice(0, cut)}Get-${trimmed.slice(cut).trimStart()}`, key: `get-${key}` };
}

/** A compiled policy glob: matches task keys in time linear in the key, without backtracking. */
export interface GlobMatcher {
  readonly glob: string;
  test(key: string): boolean;
}

const STAR = '\u0001';
const ANY = '\u0002';

/**
 * Compiles a policy glob (`Remove-*`, `Set-?ailbox`) to a matcher over task keys: `*` any run of
 * characters, `?` exactly one (a UTF-16 unit), everything else literal; the glob is folded as
 * task names are. The pieces between stars are found leftmost and greedily in turn — the first
 * anchored at the start, the last at the end — which is exact for globs and reads each key
 * position at most once per piece character.
 */
export function compileGlob(glob: string): GlobMatcher {
  const pieces = taskKey(glob.replaceAll('*', STAR).replaceAll('?', ANY)).split(STAR);
  const first = pieces[0]!;
  if (pieces.length === 1) return { glob, test: (key) => key.length === first.length && pieceAt(key, first, 0) };
  const last = pieces[pieces.length - 1]!;
  const middle = pieces.slice(1, -1).filter((p) => p !== '');
  const fixed = first.length + last.length;
  return {
    glob,
    test(key) {
      if (key.length < fixed || !pieceAt(key, first, 0) || !pieceAt(key, last, key.length - last.length)) return false;
      let at = first.length;
      const end = key.length - last.length;
      for (const piece of middle) {
        const found = findPiece(key, piece, at, end);
        if (found < 0) return false;
        at = found + piece.length;
      }
      return true;
    },
  };
}

/** Whether `piece` (`?` = any one unit) matches `key` at `at`. */
function pieceAt(key: string, piece: string, at: number): boolean {
  for (let k = 0; k < piece.length; k++) {
    const c = piece.charCodeAt(k);
    if (c !== 0x02 && c !== key.charCodeAt(at + k)) return false;
  }
  return true;
}

/** The leftmost position ≥ `from` where `piece` matches and ends by `end`, or -1. */
function findPiece(key: string, piece: string, from: number, end: number): number {
  if (!piece.includes(ANY)) {
    const at = key.indexOf(piece, from);
    return at >= 0 && at + piece.length <= end ? at : -1;
  }
  for (let at = from; at + piece.length <= end; at++) if (pieceAt(key, piece, at)) return at;
  return -1;
}

export function isGlob(name: string): boolean {
  return name.includes('*') || name.includes('?');
}
