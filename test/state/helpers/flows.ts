import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import { readAuditEvents } from '../../../src/audit/search.js';
import { api, invoke, type Reply } from '../../helpers/http.js';
import { token } from '../../helpers/tokens.js';

const tokens = new Map<string, Promise<string>>();
/** One token per user for the whole file (signing is not what these tests measure). */
export function tok(user: string): Promise<string> {
  let t = tokens.get(user);
  if (!t) tokens.set(user, (t = token(user, { expiresInSeconds: 3600 })));
  return t;
}

export async function requestAccess(controlUrl: string, user: string, task: string): Promise<string> {
  const r = await api(controlUrl, 'POST', '/api/requests', await tok(user), { task, reason: 'state test' });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return (r.body as { id: string }).id;
}

export async function decide(controlUrl: string, verb: 'approve' | 'deny' | 'revoke' | 'cancel', user: string, id: string): Promise<Reply> {
  return api(controlUrl, 'POST', `/api/requests/${id}/${verb}`, await tok(user), verb === 'cancel' ? undefined : {});
}

/** A New-JournalRule grant for `user`, requested on one instance and approved on another. */
export async function grantJournal(user: string, requestOn: string, approveOn: string): Promise<string> {
  const id = await requestAccess(requestOn, user, 'New-JournalRule');
  const r = await decide(approveOn, 'approve', 'alice@contoso.com', id);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  expect(r.body.status).toBe('approved');
  return id;
}

export async function call(proxyUrl: string, user: string | null, cmdlet: string): Promise<number> {
  return (await invoke(proxyUrl, cmdlet, { Name: 'x' }, user ? await tok(user) : undefined)).status;
}

export async function auditEvents(dataDir: string, type?: string): Promise<Array<Record<string, unknown>>> {
  const out: Array<Record<string, unknown>> = [];
  for await (const e of readAuditEvents(join(dataDir, 'audit.jsonl'), type ? { type } : {})) out.push(e);
  return out;
}

export async function readyz(controlUrl: string): Promise<number> {
  return (await fetch(`${controlUrl}/readyz`)).status;
}

export async function fileText(path: string): Promise<string> {
  return readFile(path, 'utf8');
}
