import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';

/** Event types in chain order, over the rotated segments and then the live file of `dir`. */
export async function chainTypes(dir: string): Promise<string[]> {
  const names = (await readdir(dir)).filter((n) => n.endsWith('.jsonl'));
  names.sort((a, b) => Number(a === 'audit.jsonl') - Number(b === 'audit.jsonl') || a.localeCompare(b));
  const out: string[] = [];
  for (const name of names) {
    for (const line of (await readFile(join(dir, name), 'utf8')).split('\n').filter(Boolean)) out.push((JSON.parse(line) as { type: string }).type);
  }
  return out;
}
