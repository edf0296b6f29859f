import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { AuditEvent } from '../audit/log.js';
import { classifyExchange } from '../classify/exchange.js';
import type { TokenVerifier } from '../identity/jwt.js';
import type { PolicySet } from '../policy/compile.js';
import { decide, type Command, type Decision, type Grant, type Identity, type Verdict } from '../policy/decide.js';
import type { Forwarder } from './forward.js';
import { sendError } from './responses.js';

/** What the data path reads on every request; swapped as a whole on policy reload. */
export interface ProxyContext {
  policies(): PolicySet;
  verifier(): TokenVerifier;
  grantsOf(user: string): readonly Grant[];
  audit: { append(event: AuditEvent): Promise<void> };
  now(): number;
  /** Where callers file access requests (for error bodies). */
  requestUrl: string;
  log: Logger;
  onDecision?(outcome: 'pass' | 'forward' | 'block' | 'reject' | 'error', status: number): void;
}

export function createProxyServer(ctx: ProxyContext, forwarder: Forwarder): Server {
  const server = createServer({ maxHeaderSize: 16 * 1024, requestTimeout: 30_000, headersTimeout: 10_000 }, (req, res) => {
    readBody(req, res, ctx.policies().settings.maxBodyBytes, (body) => {
      handle(ctx, forwarder, req, res, body).catch((err: unknown) => {
        ctx.log.error({ err }, 'proxy handler failed');
        ctx.onDecision?.('error', 500);
        sendError(res, 500, { code: 'GatewayError', message: 'internal gateway error; the request was not forwarded' });
      });
    });
  });
  server.maxHeadersCount = 100;
  server.keepAliveTimeout = 5_000;
  return server;
}

/** Buffers the body up to `limit` bytes; over it, answers 413 and never forwards. */
function readBody(req: IncomingMessage, res: ServerResponse, limit: number, done: (body: Buffer) => void): void {
  const declared = Number(req.headers['content-length']);
  if (declared > limit) return tooLarge(req, res, limit);
  const chunks: Buffer[] = [];
  let size = 0;
  req.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size > limit) {
      req.removeAllListeners('data');
      req.removeAllListeners('end');
      tooLarge(req, res, limit);
      return;
    }
    chunks.push(chunk);
  });
  req.on('end', () => done(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)));
  req.on('error', () => res.destroy());
}

function tooLarge(req: IncomingMessage, res: ServerResponse, limit: number): void {
  sendError(res, 413, { code: 'RequestTooLarge', message: `request body exceeds ${limit} bytes; it was not forwarded` }, { connection: 'close' });
  req.resume();
  res.on('finish', () => req.socket.destroySoon());
}

async function handle(ctx: ProxyContext, forwarder: Forwarder, req: IncomingMessage, res: ServerResponse, body: Buffer): Promise<void> {
  const policies = ctx.policies();
  const head = { url: req.url ?? '/', contentType: req.headers['content-type'], contentEncoding: req.headers['content-encoding'] };
  const classified = classifyExchange(head, body, policies.settings.maxBodyBytes);

  if (classified.kind === 'pass') {
    ctx.onDecision?.('pass', 0);
    return forwarder.forward(req, res, body);
  }
  const remote = req.socket.remoteAddress ?? null;
  if (classified.kind === 'reject') {
    ctx.onDecision?.('reject', classified.status);
    // A block is a block even if the audit cannot record it.
    await ctx.audit.append({ type: 'task.blocked', actor: null, task: null, policy: null, requestId: null, remote, reason: classified.message, path: head.url }).catch(() => undefined);
    return sendError(res, classified.status, { code: classified.status === 413 ? 'RequestTooLarge' : 'BadRequest', message: `${classified.message}; the request was not forwarded` });
  }

  const commands = classified.commands;
  const identity = anyGated(commands, policies) ? await identify(ctx, req.headers.authorization) : null;
  const decision = decide(commands, policies, identity, ctx.grantsOf, ctx.now());
  if (decision.verdicts.length === 0) {
    ctx.onDecision?.('forward', 0);
    return forwarder.forward(req, res, body);
  }

  try {
    await auditDecision(ctx, decision, identity, remote);
  } catch (err) {
    ctx.log.error({ err }, 'audit write failed; gated request refused');
    ctx.onDecision?.('error', 503);
    return sendError(res, 503, { code: 'AuditUnavailable', message: 'the audit log cannot be written, so gated tasks are refused (fail closed); try again later' }, { 'retry-after': '5' });
  }

  ctx.onDecision?.(decision.action, decision.status);
  if (decision.action === 'forward') return forwarder.forward(req, res, body);
  const blocked = decision.verdicts.find((v) => v.kind === 'unidentified' || v.kind === 'ungranted')!;
  sendError(res, decision.status, blockedError(ctx, blocked, decision.status));
}

function anyGated(commands: readonly Command[], policies: PolicySet): boolean {
  for (const c of commands) if (policies.policiesFor(c.key) !== null) return true;
  return false;
}

async function identify(ctx: ProxyContext, authorization: string | undefined): Promise<Identity | null> {
  const verifier = ctx.verifier();
  const cached = verifier.cached(authorization);
  return cached !== undefined ? cached : verifier.verify(authorization);
}

function auditDecision(ctx: ProxyContext, decision: Decision, identity: Identity | null, remote: string | null): Promise<unknown> {
  const events: Promise<void>[] = [];
  for (const v of decision.verdicts) {
    const type = eventType(v, decision);
    if (type === null) continue;
    events.push(
      ctx.audit.append({
        type,
        actor: identity?.user ?? null,
        task: v.command.name,
        policy: v.policy.id,
        requestId: v.kind === 'granted' ? v.grant.requestId : null,
        remote,
        parameters: Object.fromEntries(v.command.params),
        ...(decision.mode !== 'enforce' ? { mode: decision.mode } : {}),
      }),
    );
  }
  return Promise.all(events);
}

function eventType(v: Verdict, decision: Decision): string | null {
  if (v.kind === 'granted') return decision.action === 'forward' ? 'task.executed' : null;
  if (v.kind === 'system') return decision.action === 'forward' ? 'task.system' : null;
  return decision.mode === 'enforce' ? 'task.blocked' : 'task.reported';
}

function blockedError(ctx: ProxyContext, v: Verdict, status: number) {
  const task = v.command.name;
  if (status === 401) {
    return {
      code: 'AuthenticationRequired',
      message: `${task} is a privileged task (policy ${v.policy.id}); send a valid bearer token (Authorization: Bearer <JWT>)`,
      task,
      policy: v.policy.id,
      requestUrl: ctx.requestUrl,
    };
  }
  return {
    code: 'PrivilegedAccessRequired',
    message: `${task} requires an approved access request under policy ${v.policy.id}, and you hold none that covers this call. Request access: POST ${ctx.requestUrl} {"task":"${task}","reason":"…"} (or: pamgate request --task ${task} --reason "…"), then retry once it is approved.`,
    task,
    policy: v.policy.id,
    requestUrl: ctx.requestUrl,
  };
}
