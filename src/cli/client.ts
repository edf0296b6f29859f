/** Client verbs for the control API: request, requests, approve, deny, cancel, revoke. */

export interface ClientOptions {
  server: string;
  token: string | undefined;
  json: boolean;
}

import { CliError } from './errors.js';

export { CliError } from './errors.js';

export async function callApi(opts: ClientOptions, method: 'GET' | 'POST', path: string, body?: unknown): Promise<unknown> {
  return (await exchange(opts, method, path, body)).data;
}

/** A listing across all its pages: follows each answer's `Link: <…>; rel="next"` and joins the arrays. */
export async function callApiAllPages(opts: ClientOptions, path: string): Promise<unknown[]> {
  const all: unknown[] = [];
  for (let next: string | null = path; next !== null; ) {
    const { data, res } = await exchange(opts, 'GET', next);
    if (!Array.isArray(data)) throw new CliError(`GET ${next}: expected a list, got ${typeof data}`);
    all.push(...(data as unknown[]));
    next = /<([^<>]+)>;\s*rel="next"/.exec(res.headers.get('link') ?? '')?.[1] ?? null;
  }
  return all;
}

async function exchange(opts: ClientOptions, method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ data: unknown; res: Response }> {
  if (!opts.token) throw new CliError('PAMGATE_TOKEN is not set: export your bearer token (JWT) first');
  let res: Response;
  try {
    res = await fetch(new URL(path, opts.server), {
      method,
      headers: { authorization: `Bearer ${opts.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
  } catch (err) {
    throw new CliError(`cannot reach ${opts.server}: ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}`);
  }
  const text = await res.text();
  let data: unknown = text;
  try {
    data = JSON.parse(text);
  } catch {
    /* keep text */
  }
  if (!res.ok) {
    const message = (data as { error?: { message?: string } })?.error?.message ?? text;
    throw new CliError(`${res.status}: ${message}`);
  }
  return { data, res };
}

interface RequestView {
  id: string;
  status: string;
  requester: string;
  task: string | null;
  role: string | null;
  policy: string;
  approverGroup?: string | null;
  approvals: Array<{ approver?: string; at?: string }>;
  approvalsRequired: number;
  expiresAt: string | null;
  decidedBy?: string | null;
  reason: string;
}

/**
 * What an approver's action did, said from the approver's side: who acted, on whose request, and
 * what remains (approvals still needed, or the grant's end).
 */
export function formatAction(verb: 'approve' | 'deny' | 'cancel' | 'revoke', r: RequestView): string {
  const what = `request ${r.id} (${r.task ?? `role ${r.role}`}, requested by ${r.requester}, policy ${r.policy})`;
  if (verb === 'approve') {
    const latest = [...r.approvals].sort((a, b) => String(a.at).localeCompare(String(b.at))).at(-1);
    const by = latest?.approver ?? 'you';
    const given = `${r.approvals.length} of ${r.approvalsRequired} approvals`;
    if (r.status === 'approved') return `approved by ${by}: ${what} is now approved (${given}); the grant runs until ${r.expiresAt}`;
    const missing = r.approvalsRequired - r.approvals.length;
    return `approved by ${by}: ${what} has ${given}; ${missing} more needed${r.approverGroup ? ` from ${r.approverGroup}` : ''} (still ${r.status})`;
  }
  if (verb === 'deny') return `denied by ${r.decidedBy ?? 'you'}: ${what} is denied (final)`;
  if (verb === 'revoke') return `revoked by ${r.decidedBy ?? 'you'}: ${what}; its grant covers no call from now on`;
  return `canceled: ${what}`;
}

export function formatRequest(r: RequestView): string {
  const what = r.task ?? `role ${r.role}`;
  const approvals = r.approvalsRequired > 0 ? ` approvals ${r.approvals.length}/${r.approvalsRequired}` : '';
  const until = r.expiresAt ? ` until ${r.expiresAt}` : '';
  return `${r.id}  ${r.status.padEnd(8)} ${what} by ${r.requester} (policy ${r.policy})${approvals}${until}`;
}

export function print(opts: ClientOptions, data: unknown): void {
  if (opts.json) {
    process.stdout.write(JSON.stringify(data, null, 2) + '\n');
  } else if (Array.isArray(data)) {
    process.stdout.write(data.length === 0 ? 'no requests\n' : data.map((r) => formatRequest(r as RequestView)).join('\n') + '\n');
  } else {
    process.stdout.write(formatRequest(data as RequestView) + '\n');
  }
}
