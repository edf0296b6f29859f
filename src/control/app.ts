import { Hono, type Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { Registry } from 'prom-client';
import type { ZodType } from 'zod';
import { JsonAmbiguityError, parseStrictJson } from '../classify/json.js';
import type { AccessService } from '../grants/service.js';
import { ServiceError } from '../grants/service.js';
import type { TokenVerifier } from '../identity/jwt.js';
import type { PolicySet } from '../policy/compile.js';
import type { Identity } from '../policy/decide.js';
import { openApiDocument } from './openapi.js';
import { mountUi } from './ui/routes.js';
import { clientAddress } from '../proxy/client-address.js';
import { createRequestBody, decisionBody, listQuery, reviewQuery } from './schemas.js';

export interface ControlContext {
  service: AccessService;
  verifier(): TokenVerifier;
  policies(): PolicySet;
  /** Readiness of each dependency (store, audit file). */
  ready(): Promise<Record<string, boolean>>;
  /** Why a failing check fails, by check name, where there is more to say than false. */
  readyReasons?(): Record<string, string>;
  metrics: Registry;
  /** task.executed counts per request id in [from, to), read from the audit file. */
  countUses(from: number, to: number): Promise<Map<string, number>>;
  now(): number;
}

type Env = { Variables: { identity: Identity } };

class HttpError extends Error {
  constructor(
    readonly status: 400 | 401 | 403 | 404 | 409 | 413 | 429 | 503,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

const CODES: Record<number, string> = { 400: 'BadRequest', 401: 'AuthenticationRequired', 403: 'Forbidden', 404: 'NotFound', 409: 'Conflict', 413: 'RequestTooLarge', 429: 'TooManyRequests', 503: 'Unavailable' };

export function createControlApp(ctx: ControlContext): Hono<Env> {
  const app = new Hono<Env>();

  app.onError((err, c) => {
    if (err instanceof HttpError || err instanceof ServiceError) {
      if (err instanceof ServiceError && err.retryAfterSeconds !== undefined) c.header('retry-after', String(err.retryAfterSeconds));
      return c.json({ error: { code: CODES[err.status] ?? 'Error', message: err.message, ...(err.field ? { field: err.field } : {}) } }, err.status);
    }
    console.error(err);
    return c.json({ error: { code: 'InternalError', message: 'internal error' } }, 500);
  });
  app.notFound((c) => c.json({ error: { code: 'NotFound', message: `no route ${c.req.method} ${c.req.path}` } }, 404));

  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.get('/readyz', async (c) => {
    const checks = await ctx.ready();
    const ok = Object.values(checks).every(Boolean);
    const reasons = ok ? undefined : ctx.readyReasons?.();
    return c.json({ status: ok ? 'ready' : 'not ready', checks, ...(reasons !== undefined && Object.keys(reasons).length > 0 ? { reasons } : {}) }, ok ? 200 : 503);
  });
  app.get('/metrics', async (c) => c.text(await ctx.metrics.metrics(), 200, { 'content-type': ctx.metrics.contentType }));
  app.get('/api/openapi.json', (c) => c.json(openApiDocument));

  app.use('/api/*', bodyLimit({ maxSize: 64 * 1024, onError: () => { throw new HttpError(413, 'request body over 64 KiB'); } }));
  app.use('/api/*', async (c, next) => {
    const identity = await ctx.verifier().verify(c.req.header('authorization'));
    if (!identity) throw new HttpError(401, 'a valid bearer token is required (Authorization: Bearer <JWT>)');
    c.set('identity', identity);
    await next();
  });

  const remote = (c: Context): string | null =>
    clientAddress((c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined)?.incoming?.socket?.remoteAddress, c.req.header('x-forwarded-for'), ctx.policies().settings.trustedProxies);

  app.post('/api/requests', async (c) => {
    const body = parse(createRequestBody, await readJson(c));
    const created = await ctx.service.create(c.get('identity'), body, remote(c));
    return c.json(created, 201);
  });

  app.get('/api/requests', (c) => {
    const q = parse(listQuery, singleQuery(c));
    const { requests, next } = ctx.service.list(c.get('identity').user, q);
    // The body stays the array the contract names; where more follow, a Link header says where.
    if (next !== null) {
      const query = new URLSearchParams(Object.entries({ ...q, after: next }).filter(([, v]) => v !== undefined).map(([k, v]): [string, string] => [k, String(v)]));
      c.header('link', `</api/requests?${query}>; rel="next"`);
    }
    return c.json(requests);
  });

  app.get('/api/requests/:id', (c) => c.json(ctx.service.get(c.req.param('id'), c.get('identity').user)));

  for (const verb of ['approve', 'deny', 'revoke'] as const) {
    app.post(`/api/requests/:id/${verb}`, async (c) => {
      const body = parse(decisionBody, await readJson(c, true));
      const result = await ctx.service[verb](c.req.param('id'), c.get('identity'), body.comment ?? null, remote(c));
      return c.json(result);
    });
  }
  app.post('/api/requests/:id/cancel', async (c) => c.json(await ctx.service.cancel(c.req.param('id'), c.get('identity'), remote(c))));

  app.get('/api/review', async (c) => {
    const identity = c.get('identity');
    if (!ctx.policies().isAdmin(identity.user)) throw new HttpError(403, 'only members of the admin group may review grants');
    const q = parse(reviewQuery, singleQuery(c));
    const to = q.to ? Date.parse(q.to) : ctx.now() + 1; // default period ends now, inclusive
    const from = q.from ? Date.parse(q.from) : to - 30 * 24 * 3_600_000;
    if (from >= to) throw new HttpError(400, 'from must be before to', 'from');
    const uses = await ctx.countUses(from, to);
    const grants = ctx.service.grantsInPeriod(from, to).map((g) => ({ ...g, uses: uses.get(g.id) ?? 0 }));
    // Requests that ended before this are pruned from the state (settings.closedRequestRetentionDays): the audit file has them.
    const retainedFrom = new Date(ctx.now() - ctx.policies().settings.closedRequestRetentionDays * 86_400_000).toISOString();
    return c.json({ from: new Date(from).toISOString(), to: new Date(to).toISOString(), retainedFrom, grants, neverUsed: grants.filter((g) => g.uses === 0).map((g) => g.id) });
  });

  mountUi(app);
  app.get('/', (c) => c.redirect('/ui'));
  return app;
}

async function readJson(c: Context, optional = false): Promise<unknown> {
  const text = await c.req.text();
  if (text.trim() === '') {
    if (optional) return {};
    throw new HttpError(400, 'request body must be a JSON object');
  }
  try {
    // JSON.parse keeps the last of two equal keys; the strict reader refuses them (also when they
    // differ only in case, as `parameters` names do for a grant's scope), so what the approver
    // sees and what is stored cannot be two readings of one body.
    parseStrictJson(text);
    return JSON.parse(text);
  } catch (err) {
    if (err instanceof JsonAmbiguityError) throw new HttpError(400, `request body is ambiguous: ${err.message}`);
    throw new HttpError(400, `request body is not valid JSON: ${(err as Error).message}`);
  }
}

/** The query as one value per name; a name given twice is ambiguous and refused, not resolved to its first value. */
function singleQuery(c: Context): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, values] of Object.entries(c.req.queries())) {
    if (values.length > 1) throw new HttpError(400, `${name}: given ${values.length} times; give it once`, name);
    out[name] = values[0]!;
  }
  return out;
}

function parse<T>(schema: ZodType<T>, value: unknown): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  // An unknown property is reported on its parent; name the property itself.
  const path = issue.code === 'unrecognized_keys' ? [...issue.path, issue.keys[0] ?? ''] : issue.path;
  const field = path.map(String).join('.') || undefined;
  throw new HttpError(400, field ? `${field}: ${issue.message}` : issue.message, field);
}
