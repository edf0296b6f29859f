import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import ts from 'typescript';

/** One regular expression written in the source: a literal, or a `RegExp(...)` / `new RegExp(...)` call. */
export interface FoundRegex {
  /** `src/file.ts:line`. */
  where: string;
  /** The pattern, or null when it is computed at run time (not a literal string). */
  source: string | null;
  flags: string;
  /** The call's pattern argument as written, for a computed pattern. */
  text: string;
}

function tsFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...tsFiles(path));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) out.push(path);
  }
  return out;
}

/** The value of a string literal or substitution-free template, else null. */
function literalText(node: ts.Node | undefined): string | null {
  if (node === undefined) return null;
  if (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) return node.text;
  return null;
}

/** Every regular expression in the TypeScript files under `root/dir`, parsed with the compiler (not a hand regex). */
export function findRegexes(root: string, dir = 'src'): FoundRegex[] {
  const found: FoundRegex[] = [];
  for (const file of tsFiles(join(root, dir))) {
    const sf = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
    const where = (node: ts.Node): string => `${relative(root, file)}:${sf.getLineAndCharacterOfPosition(node.getStart(sf)).line + 1}`;
    const visit = (node: ts.Node): void => {
      if (node.kind === ts.SyntaxKind.RegularExpressionLiteral) {
        const text = node.getText(sf);
        const end = text.lastIndexOf('/');
        found.push({ where: where(node), source: text.slice(1, end), flags: text.slice(end + 1), text });
      } else if ((ts.isNewExpression(node) || ts.isCallExpression(node)) && ts.isIdentifier(node.expression) && node.expression.text === 'RegExp') {
        const [pattern, flags] = node.arguments ?? [];
        const flagText = flags === undefined ? '' : literalText(flags);
        const source = literalText(pattern);
        found.push({ where: where(node), source: flagText === null ? null : source, flags: flagText ?? '', text: pattern?.getText(sf) ?? '' });
      }
      ts.forEachChild(node, visit);
    };
    visit(sf);
  }
  return found;
}
