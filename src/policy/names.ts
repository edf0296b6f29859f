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

/** Compiles a policy glob (`Remove-*`, `Set-?ailbox`) to a matcher over task keys. */
export function globToRegExp(glob: string): RegExp {
  const key = taskKey(glob.replace(/\*/g, '\u0001').replace(/\?/g, '\u0002'));
  const body = key
    .split('')
    .map((c) => (c === '\u0001' ? '.*' : c === '\u0002' ? '.' : c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
    .join('');
  return new RegExp(`^${body}$`, 's');
}

export function isGlob(name: string): boolean {
  return name.includes('*') || name.includes('?');
}
