import * as crypto from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { AuditEvent } from '../audit/log.js';
import { classifyExchange, mayRunCommands } from '../classify/exchange.js';
import type { TokenVerifier } from '../identity/jwt.js';
import type { PolicySet } from '../policy/compile.js';
import { decide, type Command, type Decision, type Grant, type Identity, type Verdict } from '../policy/decide.js';
import { clientAddress } from './client-address.js';
import type { RefusalLimiter } from './refusal-limiter.js';
import { onClientError } from './client-error.js';
import type { Forwarder } from './forward.js';
import { PATH_OVERRIDE_HEADERS, SENSITIVE_HEADERS } from './headers.js';
import { AUDIT_UNAVAILABLE, errorBody, sendError, sendErrorBody } from './responses.js';
import type { TlsMaterial } from '../runtime/tls.js';

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
  onDecision?(outcome: 'pass' | 'forward' | 'block' | 'reject' | 'throttled' | 'error', status: number): void;
  /** Refusals per client; past its budget a client's requests on command routes are answered 429 unread. */
  refusals?: RefusalLimiter;
  /** The path of UPSTREAM_URL when it is not "/": requests reach the upstream under it, so it is classified too. */
  upstreamBasePath?: string;
  /** False while grants cannot be trusted (shared state store unreachable or stale): decisions resting on them answer 503. */
  grantsTrusted?(): boolean;
}

/** Slow-client and header limits of the proxy listener. */
export interface ListenerLimits {
  /** Time a client has to send the complete request head (slowloris). */
  headersTimeoutMs: number;
  /** Time a client has to send the complete request, body included. */
  requestTimeoutMs: number;
  maxHeaderBytes: number;
  maxHeaders: number;
}

/** Defaults, overridable for slow networks (and tests) with PAMGATE_HEADERS_TIMEOUT_MS / PAMGATE_REQUEST_TIMEOUT_MS. */
export function listenerLimits(env: NodeJS.ProcessEnv = process.env): ListenerLimits {
  const headersTimeoutMs = positiveInt(env['PAMGATE_HEADERS_TIMEOUT_MS'], 10_000);
  return {
    headersTimeoutMs,
    requestTimeoutMs: Math.max(headersTimeoutMs, positiveInt(env['PAMGATE_REQUEST_TIMEOUT_MS'], 30_000)),
    maxHeaderBytes: 16 * 1024,
    maxHeaders: 100,
  };
}

function positiveInt(text: string | undefined, fallback: number): number {
  const n = Number(text);
  return text !== undefined && Number.isInteger(n) && n > 0 ? n : fallback;
}

/** The client a request is recorded as coming from (X-Forwarded-For only from settings.trustedProxies). */
function remoteOf(req: IncomingMessage, policies: PolicySet): string | null {
  return clientAddress(req.socket.remoteAddress, req.headers['x-forwarded-for'], policies.settings.trustedProxies);
}

/** Sent back as `x-request-id` and carried by the log lines of the decision, so a caller's report can be found in the logs. */
function newRequestId(): string {
  return crypto.randomUUID();
}

/** Who is calling, as far as the token says ('' when nobody): the budget of refusals is per address and user. */
async function callerOf(ctx: ProxyContext, req: IncomingMessage): Promise<string> {
  const verifier = ctx.verifier();
  const cached = verifier.cached(req.headers.authorization);
  const identity = cached !== undefined ? cached : await verifier.verify(req.headers.authorization);
  return identity?.user ?? '';
}

/** The caller the cache already knows, without waiting: for counting a refusal. */
function knownCaller(ctx: ProxyContext, req: IncomingMessage): string {
  return ctx.verifier().cached(req.headers.authorization)?.user ?? '';
}

/** Counts a refusal against its client; the refusal that spends the last of the budget is logged and recorded. */
function countRefusal(ctx: ProxyContext, address: string | null, user: string): void {
  if (ctx.refusals === undefined || address === null) return;
  if (!ctx.refusals.spend(address, user)) return;
  const { refusalBurst, refusalsPerSecond } = ctx.policies().settings;
  ctx.log.warn({ remote: address, actor: user || null, burst: refusalBurst, perSecond: refusalsPerSecond }, 'client throttled: too many refused requests; its requests on command routes are answered 429 unread until it earns budget back');
  ctx.audit.append({ type: 'client.throttled', actor: user || null, task: null, policy: null, requestId: null, remote: address, burst: refusalBurst, perSecond: refusalsPerSecond }).catch((err: unknown) => ctx.log.error({ err }, 'audit write failed: client.throttled not recorded'));
}

/** Answers a throttled client 429 from the head alone: the body is discarded unread, nothing is forwarded. */
function throttle(ctx: ProxyContext, req: IncomingMessage, res: ServerResponse, address: string, user: string, wait: number): void {
  ctx.onDecision?.('throttled', 429);
  req.resume();
  if (ctx.log.isLevelEnabled('debug')) ctx.log.debug({ remote: address, actor: user || null, path: (req.url ?? '/').slice(0, 2048), retryAfter: wait }, 'request throttled');
  sendError(res, 429, { code: 'TooManyRequests', message: `too many refused requests from this client; retry in ${wait} s. The request was not read nor forwarded` }, { 'retry-after': String(wait) });
}

/** With `tls`, the listener speaks HTTPS (its certificate can be replaced later with setSecureContext). */
export function createProxyServer(ctx: ProxyContext, forwarder: Forwarder, limits: ListenerLimits = listenerLimits(), tls?: TlsMaterial): Server {
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const refusal = refuseHead(req, limits);
    if (refusal !== null) {
      req.resume();
      return refuse(ctx, req, res, refusal.status, refusal.status === 431 ? 'RequestHeaderFieldsTooLarge' : 'BadRequest', refusal.message);
    }
    const proceed = (): void =>
      readBody(ctx, req, res, ctx.policies().settings.maxBodyBytes, (body) => {
        handle(ctx, forwarder, req, res, body).catch((err: unknown) => {
          ctx.log.error({ err }, 'proxy handler failed');
          ctx.onDecision?.('error', 500);
          sendError(res, 500, { code: 'GatewayError', message: 'internal gateway error; the request was not forwarded' });
        });
      });
    // Only a client refused lately pays for the check (and for naming who it is before its body is read).
    if (ctx.refusals === undefined || ctx.refusals.idle) return proceed();
    const address = remoteOf(req, ctx.policies()) ?? '';
    if (!ctx.refusals.watches(address) || !mayRunCommands({ url: req.url ?? '/', alternateUrls: alternateTargets(req, ctx.upstreamBasePath) })) return proceed();
    callerOf(ctx, req).then(
      (user) => {
        const wait = ctx.refusals!.retryAfter(address, user);
        if (wait > 0) return throttle(ctx, req, res, address, user, wait);
        proceed();
      },
      () => proceed(),
    );
  };
  const options = {
      maxHeaderSize: limits.maxHeaderBytes,
      requestTimeout: limits.requestTimeoutMs,
      headersTimeout: limits.headersTimeoutMs,
      // Node only enforces the two timeouts above on this tick (default 30 s, which would let a slow client hold a socket that long).
      connectionsCheckingInterval: Math.min(1_000, Math.max(50, Math.floor(limits.headersTimeoutMs / 4))),
  };
  // An https.Server is an http.Server as far as everything below is concerned.
  const server = tls ? (createHttpsServer({ ...options, cert: tls.cert, key: tls.key }, onRequest) as unknown as Server) : createServer(options, onRequest);
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    if ((err.code?.startsWith('HPE_') || err.code === 'ERR_HTTP_REQUEST_TIMEOUT') && !refusedSockets.has(socket)) {
      ctx.log.info({ remote: socket.remoteAddress ?? null, error: err.code }, 'request refused: not readable as HTTP/1.1 or not in time');
    }
    onClientError({ auditRefusal: (remote, path, reason) => auditReject(ctx, remote, path, reason, false), onRefused: (status) => ctx.onDecision?.('reject', status), refusedBefore: (sock) => refusedSockets.has(sock) }, err, socket);
  });
  // Node silently drops header fields past maxHeadersCount; keep one more so refuseHead can see the excess and refuse.
  server.maxHeadersCount = limits.maxHeaders + 1;
  server.keepAliveTimeout = 5_000;
  // Answer an over-limit declared body before the client sends it; otherwise continue as usual.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    const limit = ctx.policies().settings.maxBodyBytes;
    if (Number(req.headers['content-length']) > limit) return tooLarge(ctx, req, res, limit);
    res.writeContinue();
    onRequest(req, res);
  });
  return server;
}

/** Request heads refused before any body is read: framing or routing the upstream could read differently. */
function refuseHead(req: IncomingMessage, limits: ListenerLimits): { status: 400 | 431; message: string } | null {
  if (req.rawHeaders.length / 2 > limits.maxHeaders) return { status: 431, message: `more than ${limits.maxHeaders} header fields` };
  // A reverse proxy only takes origin-form targets; absolute-form ("http://host%2f…") is where a
  // URL parser and a path normaliser disagree about where the host ends.
  if (req.url === undefined || req.url.charCodeAt(0) !== 0x2f) return { status: 400, message: 'the request target must be a path starting with "/"' };
  const aliased = underscoreAlias(req.rawHeaders);
  if (aliased !== null) return { status: 400, message: `header "${aliased}" would read as a framing or routing header on some servers` };
  const te = req.headers['transfer-encoding'];
  // Node de-chunks but does not undo other transfer codings; the bytes read would not be the body.
  if (te !== undefined && te.trim().toLowerCase() !== 'chunked') return { status: 400, message: `Transfer-Encoding "${te}" is not supported` };
  return null;
}

/** CGI-style servers read `Content_Encoding` as `Content-Encoding`; Node keeps them apart. */
function underscoreAlias(raw: readonly string[]): string | null {
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.includes('_') && SENSITIVE_HEADERS.has(name.replace(/_/g, '-').toLowerCase())) return name;
  }
  return null;
}

/** Buffers the body up to `limit` bytes; over it, answers 413 and never forwards. */
function readBody(ctx: ProxyContext, req: IncomingMessage, res: ServerResponse, limit: number, done: (body: Buffer) => void): void {
  const declared = Number(req.headers['content-length']);
  if (declared > limit) return tooLarge(ctx, req, res, limit);
  const chunks: Buffer[] = [];
  let size = 0;
  req.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size > limit) {
      req.removeAllListeners('data');
      req.removeAllListeners('end');
      tooLarge(ctx, req, res, limit);
      return;
    }
    chunks.push(chunk);
  });
  req.on('end', () => done(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)));
  req.on('error', () => res.destroy());
}

/** Answers 413 (never forwarded); on a command route the refusal is audited first. */
function tooLarge(ctx: ProxyContext, req: IncomingMessage, res: ServerResponse, limit: number): void {
  req.resume();
  res.on('finish', () => req.socket.destroySoon());
  refuse(ctx, req, res, 413, 'RequestTooLarge', `request body exceeds ${limit} bytes`);
}

/** Connections whose request was refused here: the parser may still fail on the rest of it, which is not another attempt. */
const refusedSockets = new WeakSet<Socket>();

/**
 * Refuses a request before its body is read, closing the connection (where the next request
 * starts is not to be trusted). On a route that could run commands, an attempt at a gated task
 * may be among them: the refusal is audited first, and without the audit record it is a 503.
 */
function refuse(ctx: ProxyContext, req: IncomingMessage, res: ServerResponse, status: 400 | 413 | 431, code: string, reason: string): void {
  ctx.onDecision?.('reject', status);
  refusedSockets.add(req.socket);
  const rid = newRequestId();
  const url = req.url ?? '/';
  const remote = remoteOf(req, ctx.policies());
  ctx.log.info({ rid, remote, method: req.method, path: url.slice(0, 2048), status, reason }, 'request refused');
  countRefusal(ctx, remote, knownCaller(ctx, req));
  const answer = (): void => sendError(res, status, { code, message: `${reason}; the request was not forwarded` }, { connection: 'close', 'x-request-id': rid });
  if (!mayRunCommands({ url, alternateUrls: alternateTargets(req, ctx.upstreamBasePath) })) return answer();
  void auditReject(ctx, remote, url, reason, false).then((recorded) => (recorded ? answer() : auditUnavailable(ctx, res, rid)));
}


/** Other paths the upstream could take this request for: its own base path joined on, and routing override headers. */
function alternateTargets(req: IncomingMessage, basePath: string | undefined): string[] {
  const out: string[] = [];
  if (basePath !== undefined) out.push(basePath + (req.url ?? '/'));
  for (const name of PATH_OVERRIDE_HEADERS) {
    const value = req.headers[name];
    if (typeof value === 'string') out.push(value);
  }
  return out;
}

/** The forwarded request is one request: no protocol switch the gateway would not see through. */
function dropUpgrade(req: IncomingMessage): void {
  if (req.headers.upgrade === undefined && req.headers['http2-settings'] === undefined) return;
  delete req.headers.upgrade;
  delete req.headers['http2-settings'];
  delete req.headers.connection;
}

async function handle(ctx: ProxyContext, forwarder: Forwarder, req: IncomingMessage, res: ServerResponse, body: Buffer): Promise<void> {
  const policies = ctx.policies();
  const head = { url: req.url ?? '/', alternateUrls: alternateTargets(req, ctx.upstreamBasePath), contentType: req.headers['content-type'], contentEncoding: req.headers['content-encoding'] };
  const classified = classifyExchange(head, body, policies.settings.maxBodyBytes);
  dropUpgrade(req);

  if (classified.kind === 'pass') {
    ctx.onDecision?.('pass', 0);
    if (ctx.log.isLevelEnabled('debug')) ctx.log.debug({ method: req.method, path: head.url.slice(0, 2048) }, 'ungated request forwarded');
    return forwarder.forward(req, res, body);
  }
  const remote = remoteOf(req, policies);
  const rid = newRequestId();
  if (classified.kind === 'reject') {
    const disabled = !policies.settings.enabled;
    const recorded = await auditReject(ctx, remote, head.url, classified.message, disabled, body);
    if (disabled && recorded) {
      ctx.onDecision?.('forward', 0);
      ctx.log.info({ rid, remote, path: head.url.slice(0, 2048), reason: classified.message, mode: 'disabled' }, 'unreadable request forwarded (gateway disabled)');
      return forwarder.forward(req, res, body, rid);
    }
    if (!recorded) return auditUnavailable(ctx, res, rid);
    countRefusal(ctx, remote, knownCaller(ctx, req));
    ctx.onDecision?.('reject', classified.status);
    ctx.log.info({ rid, remote, path: head.url.slice(0, 2048), status: classified.status, reason: classified.message }, 'request refused');
    return sendError(res, classified.status, { code: classified.status === 413 ? 'RequestTooLarge' : 'BadRequest', message: `${classified.message}; the request was not forwarded` }, { 'x-request-id': rid });
  }

  const commands = classified.commands;
  let identity: Identity | null = null;
  if (anyGated(commands, policies)) {
    const verifier = ctx.verifier();
    const cached = verifier.cached(req.headers.authorization);
    identity = cached !== undefined ? cached : await verifier.verify(req.headers.authorization); // a cache hit skips the await
  }
  const decision = decide(commands, policies, identity, ctx.grantsOf, ctx.now(), ctx.grantsTrusted?.() ?? true);
  if (decision.verdicts.length === 0) {
    ctx.onDecision?.('forward', 0);
    if (ctx.log.isLevelEnabled('debug')) ctx.log.debug({ remote, tasks: commands.map((c) => c.name) }, 'ungated request forwarded');
    return forwarder.forward(req, res, body);
  }

  try {
    await auditDecision(ctx, decision, identity, remote, body);
  } catch (err) {
    ctx.log.error({ err, rid }, 'audit write failed; gated request refused');
    return auditUnavailable(ctx, res, rid);
  }

  ctx.onDecision?.(decision.action, decision.status);
  logDecision(ctx, rid, decision, identity, remote);
  if (decision.action === 'forward') return forwarder.forward(req, res, body, rid);
  if (decision.status !== 503) countRefusal(ctx, remote, identity?.user ?? '');
  const blocked = decision.verdicts.find((v) => v.kind === 'unidentified' || v.kind === 'ungranted' || v.kind === 'unverifiable')!;
  sendErrorBody(res, decision.status, blockedBody(ctx, blocked, decision.status), decision.status === 503 ? { 'retry-after': '1', 'x-request-id': rid } : { 'x-request-id': rid });
}

/** One info line per gated decision: what was asked, by whom, what was decided under which policy and grant. */
function logDecision(ctx: ProxyContext, rid: string, decision: Decision, identity: Identity | null, remote: string | null): void {
  const tasks = decision.verdicts.map((v) => ({ task: v.command.name, policy: v.policy.id, verdict: v.kind, ...(v.kind === 'granted' ? { accessRequest: v.grant.requestId } : {}) }));
  const message = decision.action === 'forward' ? 'gated request forwarded' : 'gated request blocked';
  ctx.log.info({ rid, remote, actor: identity?.user ?? null, action: decision.action, status: decision.action === 'forward' ? undefined : decision.status, mode: decision.mode, tasks }, message);
}

/**
 * Serialised bodies of blocked answers: one per (status, policy, task as typed, request URL), the
 * same for every caller, so a stream of refusals does not rebuild and re-serialise each one. The
 * task name comes from the caller (anything may precede a module prefix `\`), so only short names
 * are kept, and the cache is emptied whenever it reaches BODY_CACHE_MAX entries: at most ~1 MiB.
 */
const blockedBodies = new Map<string, Buffer>();
const BODY_CACHE_MAX = 1024;
const CACHED_NAME_MAX = 128;

function blockedBody(ctx: ProxyContext, v: Verdict, status: number): Buffer {
  if (v.command.name.length > CACHED_NAME_MAX) return errorBody(blockedError(ctx, v, status));
  const key = status + '\0' + v.policy.id + '\0' + v.command.name + '\0' + ctx.requestUrl;
  let body = blockedBodies.get(key);
  if (body === undefined) {
    if (blockedBodies.size >= BODY_CACHE_MAX) blockedBodies.clear();
    body = errorBody(blockedError(ctx, v, status));
    blockedBodies.set(key, body);
  }
  return body;
}

/**
 * sha256 of the request body as received (and as forwarded): the audit event may record parameters
 * cut short (audit/bound.ts), and this still ties it to the exact bytes, e.g. in the upstream's logs.
 * Only computed for requests that are recorded.
 */
const bodySha256: (body: Buffer) => string =
  typeof crypto.hash === 'function'
    ? (body: Buffer): string => crypto.hash('sha256', body, 'hex')
    : (body: Buffer): string => crypto.createHash('sha256').update(body).digest('hex');

/** Records an unreadable request on a command route; false when the audit file cannot take it. `body`: absent when refused before it was read. */
function auditReject(ctx: ProxyContext, remote: string | null, path: string, reason: string, disabled: boolean, body?: Buffer): Promise<boolean> {
  const event = { type: disabled ? 'task.reported' : 'task.blocked', actor: null, task: null, policy: null, requestId: null, remote, reason, path: path.slice(0, 2048), ...(disabled ? { mode: 'disabled' } : {}), ...(body !== undefined ? { bodySha256: bodySha256(body) } : {}) };
  return ctx.audit.append(event).then(
    () => true,
    (err: unknown) => {
      ctx.log.error({ err }, 'audit write failed; request refused');
      return false;
    },
  );
}

function auditUnavailable(ctx: ProxyContext, res: ServerResponse, rid: string): void {
  ctx.onDecision?.('error', 503);
  ctx.log.warn({ rid, status: 503 }, 'gated request refused: audit log unavailable');
  sendError(res, 503, AUDIT_UNAVAILABLE, { 'retry-after': '5', 'x-request-id': rid });
}

function anyGated(commands: readonly Command[], policies: PolicySet): boolean {
  for (const c of commands) if (policies.policiesFor(c.key) !== null) return true;
  return false;
}

function auditDecision(ctx: ProxyContext, decision: Decision, identity: Identity | null, remote: string | null, body: Buffer): Promise<unknown> {
  const events: Promise<void>[] = [];
  let digest: string | undefined;
  for (const v of decision.verdicts) {
    const type = eventType(v, decision);
    if (type === null) continue;
    digest ??= bodySha256(body);
    const event: AuditEvent = {
      type,
      actor: identity?.user ?? null,
      task: v.command.name,
      ...(v.command.calledAs !== undefined ? { calledAs: v.command.calledAs } : {}),
      policy: v.policy.id,
      requestId: v.kind === 'granted' ? v.grant.requestId : null,
      remote,
      parameters: Object.fromEntries(v.command.params),
      bodySha256: digest,
    };
    if (decision.mode !== 'enforce') event['mode'] = decision.mode;
    if (v.kind === 'unverifiable') {
      event['status'] = 503;
      event['reason'] = 'state store unavailable';
      event['wouldBe'] = v.seen === 'granted' ? 'task.executed' : 'task.blocked';
    }
    events.push(ctx.audit.append(event));
  }
  // Almost always one event: no Promise.all round for it.
  return events.length === 1 ? events[0]! : Promise.all(events);
}

function eventType(v: Verdict, decision: Decision): string | null {
  if (v.kind === 'granted') return decision.action === 'forward' ? 'task.executed' : null;
  if (v.kind === 'system') return decision.action === 'forward' ? 'task.system' : null;
  return decision.mode === 'enforce' ? 'task.blocked' : 'task.reported';
}

function blockedError(ctx: ProxyContext, v: Verdict, status: number) {
  const task = v.command.name;
  if (status === 503) {
    return {
      code: 'StateUnavailable',
      message: `${task} is a privileged task (policy ${v.policy.id}) and the shared grant store cannot be reached, so no grant can be trusted (fail closed); try again shortly`,
      task,
      policy: v.policy.id,
      requestUrl: ctx.requestUrl,
    };
  }
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
