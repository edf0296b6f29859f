import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { TEST_POLICIES } from '../helpers/policies.js';
import { read } from './markdown.js';

// docs/api.md is the reader's reference of the control API; the OpenAPI document the gateway
// serves is the machine's. Each operation of one must be in the other, with its parameters and
// answers.
type Operation = { parameters?: { name: string; in: string }[]; responses: Record<string, unknown> };
type OpenApi = { paths: Record<string, Record<string, Operation>> };

/** `### METHOD /path` headings of docs/api.md, each with the text up to the next heading. */
function documentedOperations(markdown: string): Map<string, string> {
  const out = new Map<string, string>();
  let current: string | null = null;
  for (const line of markdown.split('\n')) {
    const heading = /^#{1,6}\s/.test(line);
    const op = /^###\s+(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)\s+`?(\/\S*?)`?\s*$/.exec(line);
    if (op) {
      current = `${op[1]} ${op[2]}`;
      if (out.has(current)) throw new Error(`docs/api.md documents ${current} twice`);
      out.set(current, '');
    } else if (heading) current = null;
    else if (current !== null) out.set(current, out.get(current) + line + '\n');
  }
  return out;
}

let gw: TestGateway;
let served: OpenApi;
beforeAll(async () => {
  // Nothing is proxied: the upstream is never contacted.
  gw = await startTestGateway({ policies: TEST_POLICIES, upstreamUrl: 'http://127.0.0.1:9' });
  const res = await fetch(`${gw.controlUrl}/api/openapi.json`);
  expect(res.status).toBe(200);
  served = (await res.json()) as OpenApi;
});
afterAll(async () => {
  await gw?.close();
});

describe('docs/api.md against the served OpenAPI document', () => {
  const servedOperations = (): string[] =>
    Object.entries(served.paths).flatMap(([path, methods]) => Object.keys(methods).map((m) => `${m.toUpperCase()} ${path}`)).sort();

  it('documents every operation the gateway serves, and no other', () => {
    const documented = [...documentedOperations(read('docs/api.md')).keys()].sort();
    expect(servedOperations().length).toBeGreaterThan(5);
    expect(documented).toEqual(servedOperations());
  });

  it("names each operation's parameters and answers in its section (an error status there or in the Errors table)", () => {
    const markdown = read('docs/api.md');
    const docs = documentedOperations(markdown);
    // The served document lists the API's common errors on every operation; the page explains them once.
    const errorTable = new Set([...(/^## Errors\n([\s\S]*?)^## /m.exec(markdown)?.[1] ?? '').matchAll(/^\|\s*(\d{3})\s*\|/gm)].map((m) => m[1]!));
    expect(errorTable.size).toBeGreaterThan(3);
    const missing: string[] = [];
    for (const [path, methods] of Object.entries(served.paths)) {
      for (const [method, op] of Object.entries(methods)) {
        const key = `${method.toUpperCase()} ${path}`;
        const text = docs.get(key) ?? '';
        for (const p of op.parameters ?? []) if (p.in !== 'path' && !text.includes(`\`${p.name}\``)) missing.push(`${key}: parameter \`${p.name}\``);
        for (const code of Object.keys(op.responses)) {
          if (new RegExp(`\\b${code}\\b`).test(text) || (code >= '400' && errorTable.has(code))) continue;
          missing.push(`${key}: answer ${code}`);
        }
      }
    }
    expect(missing).toEqual([]);
  });
});
