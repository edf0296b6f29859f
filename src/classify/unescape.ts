/**
 * Every run of backslashes followed by `u` and four hex digits replaced by that UTF-16 unit
 * (however many backslashes: any nesting depth of escaping); null when there is none.
 * One pass, each character read once.
 */
export function unescapeUnicode(s: string): string | null {
  let out = '';
  let copiedTo = 0;
  let i = s.indexOf('\\');
  while (i >= 0) {
    let end = i + 1;
    while (s.charCodeAt(end) === 0x5c) end++;
    if (s.charCodeAt(end) === 0x75 /* u */ && isHex4(s, end + 1)) {
      out += s.slice(copiedTo, i) + String.fromCharCode(parseInt(s.slice(end + 1, end + 5), 16));
      copiedTo = end + 5;
    }
    i = s.indexOf('\\', Math.max(end, copiedTo));
  }
  return copiedTo === 0 ? null : out + s.slice(copiedTo);
}

function isHex4(s: string, at: number): boolean {
  for (let k = at; k < at + 4; k++) {
    const c = s.charCodeAt(k); // NaN past the end
    if (!((c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66))) return false;
  }
  return true;
}
