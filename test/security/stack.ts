import { readFile, rm } from 'node:fs/promises';
import { expect } from 'vitest';
import { startTestGateway, type TestClock, type TestGateway } from '../helpers/gateway.js';
import { api } from '../helpers/http.js';
import { TEST_POLICIES } from '../helpers/policies.js';
import { token } from '../helpers/tokens.js';
import { startLenientUpstream, type LenientUpstream } from './lenient-upstream.js';

export const INVOKE = '/adminapi/beta/contoso.onmicrosoft.com/InvokeCommand';

/** A gateway in front of the lenient reference upstream, with tokens for the TEST_POLICIES cast. */
export interface Stack {
  gw: TestGateway;
  upstream: LenientUpstream;
  proxy: string;
  control: string;
  /** Bearer header values by user name (eve holds no grant; svc-backup is a system account). */
  auth: Record<string, string>;
  /** Asserts the upstream ran no gated cmdlet (since the last reset). */
  expectNothingGated(): Promise<void>;
  /** The audit file's events so far (single requests are in audit.jsonl once answered). */
  auditEvents(): Promise<Array<Record<string, unknown>>>;
  /** Files a request as `requester` and has `approvers` approve it; returns its id. */
  grant(requester: string, body: Record<string, unknown>, ...approvers: string[]): Promise<string>;
  stop(): Promise<void>;
}

const USERS = ['eve', 'mallory', 'alice', 'bob', 'carol', 'dave', 'root', 'svc-backup'];

export async function startStack(opts: { policies?: string; clock?: TestClock } = {}): Promise<Stack> {
  const upstream = await startLenientUpstream();
  let gw: TestGateway;
  try {
    gw = await startTestGateway({ policies: opts.policies ?? TEST_POLICIES, upstreamUrl: upstream.url, ...(opts.clock ? { clock: opts.clock } : {}) });
  } catch (err) {
    await upstream.stop();
    throw err;
  }
  const raw: Record<string, string> = {};
  const auth: Record<string, string> = {};
  for (const u of USERS) {
    raw[u] = await token(`${u}@contoso.com`);
    auth[u] = `Bearer ${raw[u]}`;
  }
  return {
    gw,
    upstream,
    proxy: gw.proxyUrl,
    control: gw.controlUrl,
    auth,
    async expectNothingGated() {
      expect(await upstream.gatedExecuted()).toEqual([]);
    },
    async auditEvents() {
      return (await readFile(gw.audit.path, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    },
    async grant(requester, body, ...approvers) {
      const created = await api(gw.controlUrl, 'POST', '/api/requests', raw[requester], { reason: 'security test', ...body });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      for (const a of approvers) {
        const r = await api(gw.controlUrl, 'POST', `/api/requests/${created.body.id}/approve`, raw[a], {});
        expect(r.status, JSON.stringify(r.body)).toBe(200);
      }
      return created.body.id as string;
    },
    async stop() {
      await gw.close();
      await upstream.stop();
      await rm(gw.dataDir, { recursive: true, force: true });
    },
  };
}

/** `{"CmdletInput":{"CmdletName":…,"Parameters":…}}` as text. */
export function invokeBody(name: string, params: Record<string, unknown> = {}): string {
  return JSON.stringify({ CmdletInput: { CmdletName: name, Parameters: params } });
}
