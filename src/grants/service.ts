import { randomUUID } from 'node:crypto';
import type { AuditEvent } from '../audit/log.js';
import type { CompiledPolicy, PolicySet } from '../policy/compile.js';
import type { Grant, Identity } from '../policy/decide.js';
import { isGlob, taskKey } from '../policy/names.js';
import { paramsAllowed } from '../policy/params.js';
import { ExpiryQueue } from './expiry-queue.js';
import { GrantIndex } from './grant-index.js';
import { ListingTable, type Listing } from './listing-table.js';
import { PackedMap } from './packed-map.js';
import * as model from './model.js';
import { isEnded, type AccessRequest, type RequestStatus } from './model.js';
import { LocalRateLimiter, type RateLimiter } from './rate-limit.js';
import type { RequestStore } from './store.js';

export interface AuditSink {
  append(event: AuditEvent): Promise<void>;
}

/** Most requests one page of GET /api/requests holds. */
export const LIST_LIMIT = 1000;

/** Parameters a request may scope beyond those its policy's `parameters` rules name. */
export const MAX_UNRULED_PARAMETERS = 8;

/** Most ended requests one prune removes with one audit record and one store write. */
const PRUNE_BATCH = 500;

export interface ListFilter {
  status?: RequestStatus | undefined;
  requester?: string | undefined;
  /** Page size, 1..LIST_LIMIT (default LIST_LIMIT). */
  limit?: number | undefined;
  /** Id of the last request of the previous page. */
  after?: string | undefined;
}

export interface CreateRequestInput {
  task?: string | undefined;
  role?: string | undefined;
  reason?: string | undefined;
  durationHours?: number | undefined;
  parameters?: Record<string, string> | undefined;
  ticket?: string | undefined;
}

/** A refusal the control API turns into an HTTP status. */
export class ServiceError extends Error {
  constructor(
    readonly status: 400 | 403 | 404 | 409 | 429 | 503,
    message: string,
    readonly field?: string,
    /** With a 429 that time will lift: seconds until asking again can succeed. */
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
  }
}

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
/**
 * Owns the access-request lifecycle. Every change is audited (durably) first, stored
 * second, and only then visible to the proxy through `grantsOf`, which is a plain
 * in-memory lookup on the hot path.
 */
export class AccessService {
  /**
   * Every request this instance knows, as JSON off the V8 heap: the hot path reads only
   * `grants`, and a heap holding every request ever made costs every proxied request GC
   * time (docs/design/006-state-off-the-heap.md). Each read parses a fresh copy.
   */
  private requests = new PackedMap<AccessRequest>();
  /** Each user's active grants: what the hot path reads. */
  private readonly grants = new GrantIndex();
  /** Requests being created per user, not yet committed: counted against the caps. */
  private readonly creating = new Map<string, number>();
  /** While `load` or `replace` reads many requests: each user's grants so far (see gatherGrants). */
  private gathering: Map<string, Grant[]> | null = null;
  /** What `list` filters and sorts on, per request, so that it parses only what it returns. */
  private listings = new ListingTable();
  /** Ids of each user's pending requests, so the cap check reads only those. */
  private readonly pendingByUser = new Map<string, Set<string>>();
  /** Open (pending or approved) requests by when they expire, so a sweep touches only what is due. */
  private readonly due = new ExpiryQueue();
  /** Ended requests by when they ended, so a prune touches only those past the retention. */
  private readonly ended = new ExpiryQueue();
  /** The prune running now, if any: one at a time. */
  private pruning: Promise<number> | null = null;
  /** Per-user buckets of request creation: the store's shared ones, else this process's. */
  private readonly limiter: RateLimiter;
  private readonly listeners: Array<(req: AccessRequest, events: readonly AuditEvent[]) => void> = [];

  constructor(
    private readonly store: RequestStore,
    private readonly audit: AuditSink,
    private readonly policies: () => PolicySet,
    private readonly now: () => number = Date.now,
  ) {
    this.limiter = store.rateLimiter ?? new LocalRateLimiter();
  }

  /**
   * The first read of the store, before anything else runs: each request is remembered as it is
   * read, so only the compact form stays on the heap. (A running instance that must take the
   * store's whole state again uses `replace`, which swaps it in one step.)
   */
  async load(): Promise<void> {
    if (this.requests.size > 0) throw new Error('AccessService.load() is for the first read; use replace()');
    const flush = this.gatherGrants();
    try {
      await this.store.forEach((req) => this.remember(req));
    } finally {
      flush();
    }
  }

  /**
   * Makes `requests` (a full read of the store) the whole known state, swapped in one step (no
   * moment with an empty index). Called on first load and when the store lost its history, so the
   * store is the truth: a request it no longer has is forgotten, and one it has at an earlier stage
   * (an approval lost with the history) is taken as the store has it — a grant survives only if
   * the store still says approved. Fail closed the other way too: a request this instance has
   * seen ended (revoked, expired, denied, canceled) stays ended even if the store has it open.
   * Returns those ended copies, for `reassert`.
   */
  replace(requests: AccessRequest[]): AccessRequest[] {
    const known = this.requests;
    this.requests = new PackedMap();
    this.listings = new ListingTable();
    this.grants.clear();
    this.pendingByUser.clear();
    this.due.clear();
    this.ended.clear();
    const ahead: AccessRequest[] = [];
    const flush = this.gatherGrants();
    try {
      for (const req of requests) {
        const mine = known.get(req.id);
        if (mine !== undefined && isEnded(mine) && !isEnded(req)) {
          this.remember(mine);
          ahead.push(mine);
        } else {
          this.remember(req);
        }
      }
    } finally {
      flush();
    }
    return ahead;
  }

  /**
   * After the store lost history: writes each ended copy this instance holds back over the
   * store's open copy (under the request's lock, audited as `request.reasserted`), so that no
   * instance — nor one started later — trusts a grant that was revoked or expired.
   */
  async reassert(ended: AccessRequest[], attempts = 3, retryMs = 500): Promise<void> {
    for (const mine of ended) {
      for (let attempt = 1; ; attempt++) {
        try {
          await this.transition(mine.id, null, (current) => {
            if (isEnded(current)) throw new model.TransitionError(409, 'already ended in the store');
            return [mine, this.event('request.reasserted', null, mine, null, { status: mine.status, storeStatus: current.status })];
          });
          break;
        } catch (err) {
          if (err instanceof ServiceError && err.status !== 503) break; // ended meanwhile, or gone from the store
          if (attempt >= attempts) throw err;
          await new Promise((r) => setTimeout(r, retryMs));
        }
      }
    }
  }

  /** Calls `listener` after each change this instance commits (notifications). */
  onCommitted(listener: (req: AccessRequest, events: readonly AuditEvent[]) => void): void {
    this.listeners.push(listener);
  }

  /** Active grants of a user (hot path: no I/O; no parsing once the user's grants are hot). */
  readonly grantsOf = (user: string): readonly Grant[] => this.grants.get(user);

  activeGrantCount(): number {
    return this.listings.countActive(this.now());
  }

  /** Re-reads one request from the store (another instance changed it). */
  async refresh(id: string): Promise<void> {
    const req = await this.store.get(id);
    if (req) this.remember(req);
  }

  /** Whether `id` is known to this instance (tests, diagnostics). */
  knows(id: string): boolean {
    return this.requests.has(id);
  }

  /** How many requests this instance holds (diagnostics, tests). */
  get size(): number {
    return this.requests.size;
  }

  async create(actor: Identity, input: CreateRequestInput, remote: string | null): Promise<AccessRequest> {
    this.assertPendingBelowCap(actor.user);
    const policies = this.policies();
    const { policy, tasks } = resolveTarget(input, policies);
    if (policy.requireReason && !input.reason?.trim()) throw new ServiceError(400, `policy "${policy.id}" requires a reason`, 'reason');
    if (policy.requireTicket && !input.ticket?.trim()) throw new ServiceError(400, `policy "${policy.id}" requires a ticket`, 'ticket');
    if (input.durationHours !== undefined && input.durationHours > policy.maxDurationHours) {
      throw new ServiceError(400, `durationHours: at most ${policy.maxDurationHours} hours under policy "${policy.id}" (asked for ${input.durationHours})`, 'durationHours');
    }
    if (policy.requireMfa && !actor.amr.includes('mfa')) {
      const message = `policy "${policy.id}" requires an MFA-authenticated token`;
      await this.auditRefusal({ type: 'request.refused', actor: actor.user, task: input.task ?? input.role ?? null, policy: policy.id, requestId: null, remote, action: 'create', error: message });
      throw new ServiceError(403, message);
    }
    if (input.parameters !== undefined) checkRequestedParameters(policy, input.parameters);
    if (policy.approval === 'auto') this.assertActiveBelowCap(actor.user);

    const now = this.now();
    const iso = new Date(now).toISOString();
    let req: AccessRequest = {
      id: randomUUID(),
      requester: actor.user,
      task: input.task ?? null,
      role: input.role ?? null,
      tasks,
      policy: policy.id,
      approverGroup: policy.approverGroup,
      approvalsRequired: policy.approval === 'auto' ? 0 : policy.approvals,
      reason: input.reason?.trim() ?? '',
      ticket: input.ticket?.trim() || null,
      requesterMfa: actor.amr.includes('mfa'),
      parameters: input.parameters ?? null,
      durationHours: model.clampDuration(input.durationHours, policy, policies),
      status: 'pending',
      createdAt: iso,
      pendingExpiresAt: new Date(now + policies.settings.pendingExpiryHours * HOUR).toISOString(),
      approvals: [],
      approvedAt: null,
      expiresAt: null,
      decidedBy: null,
      decidedAt: null,
      comment: null,
    };
    const events: AuditEvent[] = [this.event('request.created', actor.user, req, remote, { reason: req.reason, ticket: req.ticket, durationHours: req.durationHours })];
    if (policy.approval === 'auto') {
      req = { ...req, status: 'approved', approvedAt: iso, expiresAt: new Date(now + req.durationHours * HOUR).toISOString(), decidedBy: 'auto', decidedAt: iso };
      events.push(this.event('request.approved', 'auto', req, remote, { status: 'approved', expiresAt: req.expiresAt }));
    }
    // Until it is committed (audited, stored) the new request counts against its user's caps, so
    // concurrent creates cannot all pass the checks above.
    const creating = this.creating.get(actor.user) ?? 0;
    this.creating.set(actor.user, creating + 1);
    try {
      await this.takeRateToken(actor.user, policies, now);
      return await this.commit(req, events, (r) => this.store.put(r));
    } finally {
      const left = (this.creating.get(actor.user) ?? 1) - 1;
      if (left === 0) this.creating.delete(actor.user);
      else this.creating.set(actor.user, left);
      this.pruneIfDue();
    }
  }

  approve(id: string, actor: Identity, comment: string | null, remote: string | null): Promise<AccessRequest> {
    return this.transition(id, { actor: actor.user, action: 'approve', remote }, (req, now) => {
      const next = model.approve(req, actor, comment, this.policies(), now);
      const extra = { status: next.status, approvals: next.approvals.length, approvalsRequired: next.approvalsRequired, comment, expiresAt: next.expiresAt };
      return [next, this.event('request.approved', actor.user, next, remote, extra)];
    });
  }

  deny(id: string, actor: Identity, comment: string | null, remote: string | null): Promise<AccessRequest> {
    return this.transition(id, { actor: actor.user, action: 'deny', remote }, (req, now) => {
      const next = model.deny(req, actor, comment, this.policies(), now);
      return [next, this.event('request.denied', actor.user, next, remote, { comment })];
    });
  }

  cancel(id: string, actor: Identity, remote: string | null): Promise<AccessRequest> {
    return this.transition(id, { actor: actor.user, action: 'cancel', remote }, (req, now) => {
      const next = model.cancel(req, actor, now);
      return [next, this.event('request.canceled', actor.user, next, remote)];
    });
  }

  revoke(id: string, actor: Identity, comment: string | null, remote: string | null): Promise<AccessRequest> {
    return this.transition(id, { actor: actor.user, action: 'revoke', remote }, (req, now) => {
      const next = model.revoke(req, actor, comment, this.policies(), now);
      return [next, this.event('grant.revoked', actor.user, next, remote, { comment })];
    });
  }

  /** One request as `viewer` may see it, with expiry applied. */
  get(id: string, viewer: string): AccessRequest {
    const req = this.requests.get(id);
    if (!req) throw new ServiceError(404, `no request with id ${id}`);
    if (!model.mayView(req, viewer, this.policies())) throw new ServiceError(403, 'you may not view this request');
    return this.present(req);
  }

  /**
   * The requests `viewer` may see, oldest first (then by id), a page of at most `limit` after
   * the request `after`; `next` names the last one returned when more follow. Only the page is
   * materialised: a listing over 100,000 requests must not hold the event loop (and with it the
   * proxy) for the second it takes to present them all.
   */
  list(viewer: string, filter: ListFilter): { requests: AccessRequest[]; next: string | null } {
    const policies = this.policies();
    const now = this.now();
    const requester = filter.requester?.toLowerCase();
    let from: { createdAt: number; id: string } | null = null;
    if (filter.after !== undefined) {
      const createdAt = this.listings.createdAt(filter.after);
      if (createdAt === undefined) throw new ServiceError(400, `after: no request ${JSON.stringify(filter.after)}`, 'after');
      from = { createdAt, id: filter.after };
    }
    const shown: Array<{ id: string; createdAt: number }> = [];
    this.listings.forEach((id, row) => {
      if (from !== null && (row.createdAt < from.createdAt || (row.createdAt === from.createdAt && id <= from.id))) return;
      if (requester !== undefined && row.requester !== requester) return;
      if (filter.status !== undefined && statusAt(row, now) !== filter.status) return;
      if (model.mayView(row, viewer, policies)) shown.push({ id, createdAt: row.createdAt });
    });
    shown.sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const limit = filter.limit ?? LIST_LIMIT;
    const page = shown.length > limit ? shown.slice(0, limit) : shown;
    return { requests: page.map(({ id }) => this.present(this.requests.get(id)!)), next: shown.length > limit ? page.at(-1)!.id : null };
  }

  /** Grants whose validity overlaps [from, to). */
  grantsInPeriod(from: number, to: number): AccessRequest[] {
    const out: AccessRequest[] = [];
    for (const req of this.requests.values()) {
      if (req.approvedAt === null || req.expiresAt === null) continue;
      const start = Date.parse(req.approvedAt);
      const end = req.status === 'revoked' && req.decidedAt !== null ? Date.parse(req.decidedAt) : Date.parse(req.expiresAt);
      if (start < to && end > from) out.push(this.present(req));
    }
    return out;
  }

  /** Records every expiry the clock has made true (pending and granted). */
  async sweep(): Promise<number> {
    let expired = 0;
    const now = this.now();
    for (const id of this.due.popDue(now)) {
      const req = this.requests.get(id);
      if (req === undefined || model.expire(req, now) === null) continue; // moved on since it was queued
      await this.transition(id, null, (current, at) => {
        const next = model.expire(current, at);
        if (next === null) throw new model.TransitionError(409, 'no longer expirable');
        return [next, this.event('request.expired', null, next, null, { was: current.status })];
      }).then(
        () => expired++,
        () => this.due.push(now, id), // e.g. store unavailable: try again next sweep
      );
    }
    return expired;
  }

  /**
   * Removes ended requests whose end lies more than `closedRequestRetentionDays` back, from the
   * store and from memory, recording each batch (`requests.pruned`, with the ids) in the audit
   * first: the audit keeps the history, the state keeps what is open and what ended recently. With
   * a shared store every instance prunes its own view by the same rule. Returns how many went.
   */
  prune(): Promise<number> {
    if (this.pruning === null) {
      this.pruning = this.pruneOnce().finally(() => {
        this.pruning = null;
      });
    }
    return this.pruning;
  }

  /** Starts a prune when one is due and none is running (failures wait for the next one). */
  private pruneIfDue(): void {
    if (this.pruning === null && this.ended.nextAt <= this.retentionCutoff()) this.prune().catch(() => undefined);
  }

  private retentionCutoff(): number {
    return this.now() - this.policies().settings.closedRequestRetentionDays * DAY;
  }

  private async pruneOnce(): Promise<number> {
    const cutoff = this.retentionCutoff();
    const due: Array<{ id: string; closedAt: number }> = [];
    for (const id of new Set(this.ended.popDue(cutoff))) {
      const req = this.requests.get(id);
      const closedAt = req === undefined ? null : model.closedAt(req);
      if (closedAt === null) continue; // forgotten, or open again in the store's eyes (after lost history): queued again when it ends
      if (closedAt > cutoff) this.ended.push(closedAt, id); // its end moved (a reasserted copy)
      else due.push({ id, closedAt });
    }
    const requeue = (entries: Iterable<{ id: string; closedAt: number }>): void => {
      for (const { id, closedAt } of entries) this.ended.push(closedAt, id);
    };
    let pruned = 0;
    for (let i = 0; i < due.length; i += PRUNE_BATCH) {
      const batch = due.slice(i, i + PRUNE_BATCH);
      try {
        await this.audit.append({ type: 'requests.pruned', actor: null, count: batch.length, closedBefore: new Date(cutoff).toISOString(), requestIds: batch.map((b) => b.id) });
      } catch (err) {
        requeue(due.slice(i));
        throw new ServiceError(503, `audit log unavailable, nothing more was pruned: ${(err as Error).message}`);
      }
      let removed: Set<string>;
      try {
        removed = new Set(await this.store.removeEnded(batch.map((b) => b.id)));
      } catch (err) {
        requeue(due.slice(i));
        throw new ServiceError(503, `state store unavailable, nothing more was pruned: ${(err as Error).message}`);
      }
      for (const id of removed) this.forget(id);
      pruned += removed.size;
      // Held by a change in progress, or open in the store: read it again, try again next time.
      const kept = batch.filter((b) => !removed.has(b.id));
      for (const { id } of kept) await this.refresh(id).catch(() => undefined);
      requeue(kept.filter((b) => this.requests.has(b.id)));
    }
    return pruned;
  }

  /** Drops every trace of a request from memory (it is gone from the store). */
  private forget(id: string): void {
    const req = this.requests.get(id);
    if (req === undefined) return;
    this.requests.delete(id);
    this.listings.delete(id);
    const grants = this.grants.peek(req.requester);
    if (grants.some((g) => g.requestId === id)) this.grants.set(req.requester, grants.filter((g) => g.requestId !== id));
    const pending = this.pendingByUser.get(req.requester);
    if (pending?.delete(id) === true && pending.size === 0) this.pendingByUser.delete(req.requester);
  }

  /**
   * One user may file only so many requests so fast (settings.requestRateBurst, then
   * requestRatePerHour): a 429 with the seconds until the next one is allowed. Taken last, once
   * the request is otherwise acceptable, so a refused one costs no token. With a shared store the
   * buckets are shared by every instance.
   */
  private async takeRateToken(user: string, policies: PolicySet, now: number): Promise<void> {
    const rule = { burst: policies.settings.requestRateBurst, perHour: policies.settings.requestRatePerHour };
    let waitMs: number;
    try {
      waitMs = await this.limiter.take(user, rule, now);
    } catch (err) {
      throw new ServiceError(503, `state store unavailable, nothing was changed: ${(err as Error).message}`);
    }
    if (waitMs <= 0) return;
    const seconds = Math.ceil(waitMs / 1000);
    throw new ServiceError(429, `you are filing requests too fast: at most ${rule.burst} at once, then ${rule.perHour} an hour; try again in ${seconds} s`, undefined, seconds);
  }

  /**
   * Every request is kept (memory, store, journal) until it has ended and the retention has
   * passed, so one user must not be able to pile them up: a new request is refused (429) while
   * the user already has the maximum pending.
   * Counted on this instance's view, requests still being created included.
   */
  private assertPendingBelowCap(user: string): void {
    const cap = this.policies().settings.maxPendingPerUser;
    const now = this.now();
    let pending = this.creating.get(user) ?? 0;
    for (const id of this.pendingByUser.get(user) ?? []) {
      const req = this.requests.get(id);
      if (req !== undefined && model.effectiveStatus(req, now) === 'pending') pending++;
    }
    if (pending >= cap) {
      throw new ServiceError(429, `you already have ${pending} pending requests, the most one user may have (${cap}): wait for them to be decided, or cancel those you no longer need, then ask again`);
    }
  }

  /**
   * An auto policy approves without anyone looking, and every request is kept for good: one user
   * must not be able to mint grants without end. Approvers' decisions are not capped.
   */
  private assertActiveBelowCap(user: string): void {
    const cap = this.policies().settings.maxActiveGrantsPerUser;
    const now = this.now();
    let active = this.creating.get(user) ?? 0;
    for (const g of this.grants.get(user)) if (g.expiresAt > now) active++;
    if (active >= cap) {
      throw new ServiceError(429, `you already hold ${active} active grants, the most one user may hold for a policy to approve at once (${cap}): use those, or let them expire or have them revoked, then ask again`);
    }
  }

  private present(req: AccessRequest): AccessRequest {
    const status = model.effectiveStatus(req, this.now());
    return status === req.status ? req : { ...req, status };
  }

  /**
   * Read, decide, audit and store one change while holding the request's lock, so that
   * concurrent changes on any instance apply one after another and none is lost. A pessimistic
   * lock rather than optimistic CAS because the audit event is written before the store: a CAS
   * loser would already have audited a change that never happened.
   */
  private async transition(
    id: string,
    by: { actor: string; action: 'approve' | 'deny' | 'cancel' | 'revoke'; remote: string | null } | null,
    step: (req: AccessRequest, now: number) => [AccessRequest, AuditEvent],
  ): Promise<AccessRequest> {
    try {
      return await this.store.withLock(id, async (put) => {
        // Read through to the store: another instance may have moved it on.
        const stored = await this.store.get(id);
        if (stored) this.remember(stored);
        const current = stored ?? this.requests.get(id);
        if (!current) throw new ServiceError(404, `no request with id ${id}`);
        let next: AccessRequest;
        let event: AuditEvent;
        try {
          [next, event] = step(current, this.now());
        } catch (err) {
          if (!(err instanceof model.TransitionError)) throw err;
          // Someone acting beyond their rights (approving their own request, deciding for another
          // group) is on the record; a wrong state (409) is not an attempt at anything.
          if (err.status === 403 && by !== null) await this.auditRefusal(this.event('request.refused', by.actor, current, by.remote, { action: by.action, error: err.message }));
          throw new ServiceError(err.status, err.message);
        }
        return this.commit(next, [event], put);
      });
    } catch (err) {
      if (err instanceof ServiceError) throw err;
      throw new ServiceError(503, `state store unavailable, nothing was changed: ${(err as Error).message}`);
    }
  }

  /** Audit first (durable), then store, then make it visible. */
  private async commit(req: AccessRequest, events: AuditEvent[], put: (req: AccessRequest) => Promise<void>): Promise<AccessRequest> {
    try {
      for (const e of events) await this.audit.append(e);
    } catch (err) {
      throw new ServiceError(503, `audit log unavailable, nothing was changed: ${(err as Error).message}`);
    }
    try {
      await put(req);
    } catch (err) {
      // The audit already holds the change: record that it did not take, so the trail stays true.
      const reason = (err as Error).message;
      await this.audit.append({ type: 'request.commit_failed', actor: null, task: req.task ?? req.role, policy: req.policy, requestId: req.id, remote: null, status: req.status, error: reason }).catch(() => undefined);
      throw new ServiceError(503, `state store unavailable, the change was not stored: ${reason}`);
    }
    this.remember(req);
    for (const listener of this.listeners) listener(req, events);
    return this.present(req);
  }

  /**
   * Records a refused attempt before it is answered. The attempt is refused whether or not the
   * record can be written (refusing needs no audit to be safe), so a failure here is swallowed:
   * the audit's own failure is what readiness and the gated routes' 503s report.
   */
  private async auditRefusal(event: AuditEvent): Promise<void> {
    try {
      await this.audit.append(event);
    } catch {
      // the 403 stands
    }
  }

  /** Mirrors a request in memory and keeps its requester's grant list current. Never moves a request backwards. */
  private remember(req: AccessRequest): void {
    const known = this.requests.get(req.id);
    if (known !== undefined && model.progress(known) > model.progress(req)) return;
    const dueAt = expiryOf(req);
    // The grant first: should a later write throw, a grant this change ended is gone already.
    this.rememberGrant(req);
    this.requests.set(req.id, req);
    this.listings.set(req.id, listingOf(req, dueAt));
    this.notePending(req);
    // An unparseable end is never pruned (push refuses NaN): kept, not guessed at.
    if (isEnded(req) && (known === undefined || !isEnded(known) || model.closedAt(known) !== model.closedAt(req))) this.ended.push(model.closedAt(req)!, req.id);
    // A deadline that does not parse is never swept (the hot path still refuses the grant: decide() needs a valid expiry).
    if (dueAt !== null && (known === undefined || expiryOf(known) !== dueAt)) this.due.push(Date.parse(dueAt), req.id);
  }

  /**
   * Until the returned flush is called, `remember` collects each user's grants here instead of
   * re-packing the user's list for every request read; the flush packs each list once.
   */
  private gatherGrants(): () => void {
    const gathered = new Map<string, Grant[]>();
    this.gathering = gathered;
    return () => {
      this.gathering = null;
      for (const [user, grants] of gathered) this.grants.set(user, grants);
    };
  }

  /** Keeps the requester's grant list current: this request's grant in it if approved and unexpired, out of it otherwise. */
  private rememberGrant(req: AccessRequest): void {
    const grant = model.grantOf(req);
    const existing = this.gathering?.get(req.requester) ?? this.grants.peek(req.requester);
    const others = existing.filter((g) => g.requestId !== req.id);
    if (grant === null && others.length === existing.length) return; // nothing to add, nothing to take out
    if (grant !== null && grant.expiresAt > this.now()) others.push(grant);
    if (this.gathering !== null) this.gathering.set(req.requester, others);
    else this.grants.set(req.requester, others);
  }

  private notePending(req: AccessRequest): void {
    const ids = this.pendingByUser.get(req.requester);
    if (req.status === 'pending') {
      if (ids === undefined) this.pendingByUser.set(req.requester, new Set([req.id]));
      else ids.add(req.id);
    } else if (ids?.delete(req.id) === true && ids.size === 0) {
      this.pendingByUser.delete(req.requester);
    }
  }

  private event(type: string, actor: string | null, req: AccessRequest, remote: string | null, extra: Record<string, unknown> = {}): AuditEvent {
    return { type, actor, task: req.task ?? req.role, policy: req.policy, requestId: req.id, remote, requester: req.requester, ...extra };
  }
}

function listingOf(req: AccessRequest, dueAt: string | null): Listing {
  const createdAt = Date.parse(req.createdAt);
  return {
    requester: req.requester,
    policy: req.policy,
    approverGroup: req.approverGroup,
    approvalsRequired: req.approvalsRequired,
    status: req.status,
    dueAt: dueAt === null ? NaN : Date.parse(dueAt),
    createdAt: Number.isNaN(createdAt) ? -Infinity : createdAt, // a date that does not parse sorts first
  };
}

/** model.effectiveStatus, from a listing. */
function statusAt(listing: Listing, now: number): RequestStatus {
  return (listing.status === 'pending' || listing.status === 'approved') && listing.dueAt <= now ? 'expired' : listing.status;
}

/** When an open request expires unless something happens first; null once it has ended. */
function expiryOf(req: AccessRequest): string | null {
  if (req.status === 'pending') return req.pendingExpiresAt;
  if (req.status === 'approved') return req.expiresAt;
  return null;
}

function resolveTarget(input: CreateRequestInput, policies: PolicySet): { policy: CompiledPolicy; tasks: string[] } {
  if (input.task !== undefined) {
    if (isGlob(input.task)) throw new ServiceError(400, 'task must name one cmdlet, not a pattern', 'task');
    const policy = policies.policyForTask(input.task);
    if (!policy) throw new ServiceError(400, `no policy covers task "${input.task}"; it is not gated and needs no request`, 'task');
    return { policy, tasks: [taskKey(input.task)] };
  }
  if (input.role !== undefined) {
    const policy = policies.policyForRole(input.role);
    const tasks = policies.roleTasks(input.role);
    if (!policy || !tasks) throw new ServiceError(400, `no policy covers role "${input.role}"`, 'role');
    // Tasks with a policy of their own are governed by it, not by the role: the grant leaves them out.
    const governed = tasks.filter((t) => policies.policiesFor(t)?.includes(policy) ?? false);
    if (governed.length === 0) throw new ServiceError(400, `every task of role "${input.role}" has a policy of its own; request those tasks directly`, 'role');
    return { policy, tasks: governed };
  }
  throw new ServiceError(400, 'give exactly one of task or role', 'task');
}

/**
 * Requested parameter values must themselves lie inside the policy's rules; beyond the
 * parameters the rules name, a request may scope at most MAX_UNRULED_PARAMETERS others.
 */
function checkRequestedParameters(policy: CompiledPolicy, parameters: Record<string, string>): void {
  const ruled = new Set(policy.paramRules.map((r) => r.name));
  const unruled = Object.keys(parameters).filter((name) => !ruled.has(name.toLowerCase())).length;
  if (unruled > MAX_UNRULED_PARAMETERS) {
    const names = ruled.size === 0 ? 'it names none' : `it names ${[...ruled].join(', ')}`;
    throw new ServiceError(400, `parameters: at most ${MAX_UNRULED_PARAMETERS} parameters that policy "${policy.id}" has no rule for (${names}); got ${unruled}`, 'parameters');
  }
  for (const [name, value] of Object.entries(parameters)) {
    const rules = policy.paramRules.filter((r) => r.name === name.toLowerCase());
    if (!paramsAllowed(rules, null, new Map([[name.toLowerCase(), value]]))) {
      throw new ServiceError(400, `parameter ${name}=${value} is outside policy "${policy.id}"`, `parameters.${name}`);
    }
  }
}
