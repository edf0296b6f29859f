import type { CompiledPolicy, PolicySet } from '../policy/compile.js';
import type { Grant, Identity } from '../policy/decide.js';

export type RequestStatus = 'pending' | 'approved' | 'denied' | 'canceled' | 'expired' | 'revoked';

export interface Approval {
  approver: string;
  at: string;
  comment: string | null;
}

/** An access request as stored and as returned by the control API. */
export interface AccessRequest {
  id: string;
  requester: string;
  task: string | null;
  role: string | null;
  /** Task keys the grant covers (one task, or every task of the role when requested). */
  tasks: string[];
  policy: string;
  approverGroup: string | null;
  approvalsRequired: number;
  reason: string;
  ticket: string | null;
  /** Whether the requester's token was MFA-authenticated (amr has "mfa") when filing; absent in records written before it was kept. */
  requesterMfa?: boolean;
  parameters: Record<string, string> | null;
  durationHours: number;
  status: RequestStatus;
  createdAt: string;
  /** A pending request expires unanswered at this time. */
  pendingExpiresAt: string;
  approvals: Approval[];
  approvedAt: string | null;
  /** The grant ends at this time (set on approval). */
  expiresAt: string | null;
  decidedBy: string | null;
  decidedAt: string | null;
  comment: string | null;
}

/** What deciding who may see a request needs of it. */
export type Visibility = Pick<AccessRequest, 'requester' | 'policy' | 'approverGroup' | 'approvalsRequired'>;

/** Why a transition was refused, as an HTTP status and a message. */
export class TransitionError extends Error {
  constructor(
    readonly status: 403 | 409,
    message: string,
  ) {
    super(message);
  }
}

const iso = (ms: number): string => new Date(ms).toISOString();
const HOUR = 3_600_000;

/** The status a request has at `now`, counting expiry that no sweep has recorded yet. */
export function effectiveStatus(req: AccessRequest, now: number): RequestStatus {
  if (req.status === 'pending' && Date.parse(req.pendingExpiresAt) <= now) return 'expired';
  if (req.status === 'approved' && req.expiresAt !== null && Date.parse(req.expiresAt) <= now) return 'expired';
  return req.status;
}

/** Revoked, expired, denied or canceled, as recorded: no way back to a grant. */
export function isEnded(req: Pick<AccessRequest, 'status'>): boolean {
  return req.status !== 'pending' && req.status !== 'approved';
}

/**
 * When an ended request ended (ms): the decision for a denial, cancellation or revocation, the
 * deadline that passed for an expiry. Null while it is open (as recorded), NaN if the date does
 * not parse.
 */
export function closedAt(req: AccessRequest): number | null {
  if (!isEnded(req)) return null;
  if (req.status === 'expired') return Date.parse(req.approvedAt !== null && req.expiresAt !== null ? req.expiresAt : req.pendingExpiresAt);
  return Date.parse(req.decidedAt ?? req.createdAt);
}

/**
 * How far a request has moved through its lifecycle. Every transition strictly increases it
 * (an approval adds one, every status change moves up a rank), so of two copies of one request
 * the one with the higher progress is the newer: a late read can never undo a revocation.
 */
export function progress(req: AccessRequest): number {
  const rank = req.status === 'pending' ? 0 : req.status === 'approved' ? 1 : 2;
  return rank * 1_000_000 + Math.min(req.approvals.length, 999_999);
}

/** The grant an approved request gives. */
export function grantOf(req: AccessRequest): Grant | null {
  if (req.status !== 'approved' || req.expiresAt === null) return null;
  return {
    requestId: req.id,
    requester: req.requester,
    policyId: req.policy,
    taskKeys: new Set(req.tasks),
    scope: req.parameters === null ? null : Object.fromEntries(Object.entries(req.parameters).map(([k, v]) => [k.toLowerCase(), v])),
    expiresAt: Date.parse(req.expiresAt),
  };
}

/** Grant length: requested hours, else the default, never above the policy's maximum. */
export function clampDuration(requested: number | undefined, policy: CompiledPolicy, policies: PolicySet): number {
  return Math.min(requested ?? policies.settings.defaultDurationHours, policy.maxDurationHours);
}

/**
 * The approver group and approval count that apply now. A reloaded policy file applies to
 * requests still pending: the current policy's rule wins over the one recorded at creation.
 */
export function approvalRule(req: Visibility, policies: PolicySet): { group: string | null; required: number } {
  const policy = policies.policies.get(req.policy);
  if (policy === undefined || policy.approval === 'auto') return { group: req.approverGroup, required: req.approvalsRequired };
  return { group: policy.approverGroup, required: policy.approvals };
}

/** Members of the request's approver group, now or when it was filed (either may act on a grant's safety: view, revoke). */
function isApproverOf(req: Visibility, user: string, policies: PolicySet): boolean {
  return policies.isMember(approvalRule(req, policies).group, user) || policies.isMember(req.approverGroup, user);
}

export function approve(req: AccessRequest, actor: Identity, comment: string | null, policies: PolicySet, now: number): AccessRequest {
  assertPending(req, now);
  if (!policies.policies.has(req.policy)) throw new TransitionError(409, `policy "${req.policy}" no longer exists; this request can only be denied or canceled`);
  assertMayDecide(req, actor, policies);
  const { group, required } = approvalRule(req, policies);
  req = { ...req, approverGroup: group, approvalsRequired: required };
  if (req.approvals.some((a) => a.approver === actor.user)) throw new TransitionError(409, 'you have already approved this request');
  const approvals = [...req.approvals, { approver: actor.user, at: iso(now), comment }];
  // Only approvers who are in the group now count: a reload that changes the group discounts the old one's votes.
  const counted = approvals.filter((a) => policies.isMember(group, a.approver)).length;
  if (counted < req.approvalsRequired) return { ...req, approvals };
  // A reload applies to what is granted too: the policy's current maximum duration and requirements.
  const policy = policies.policies.get(req.policy)!;
  if (policy.requireReason && req.reason.trim() === '') throw new TransitionError(409, `policy "${policy.id}" now requires a reason, which this request lacks: it can only be denied or canceled; file a new one`);
  if (policy.requireTicket && !req.ticket) throw new TransitionError(409, `policy "${policy.id}" now requires a ticket, which this request lacks: it can only be denied or canceled; file a new one`);
  // Filing checked MFA against the policy as it was then; a reload may have required it since.
  // A record from before the flag was kept counts as filed without MFA (fail closed).
  if (policy.requireMfa && req.requesterMfa !== true) throw new TransitionError(409, `policy "${policy.id}" now requires MFA, and this request was not filed with an MFA-authenticated token: it can only be denied or canceled; file a new one`);
  const durationHours = Math.min(req.durationHours, policy.maxDurationHours);
  return {
    ...req,
    approvals,
    durationHours,
    status: 'approved',
    approvedAt: iso(now),
    expiresAt: iso(now + durationHours * HOUR),
    decidedBy: actor.user,
    decidedAt: iso(now),
  };
}

export function deny(req: AccessRequest, actor: Identity, comment: string | null, policies: PolicySet, now: number): AccessRequest {
  assertPending(req, now);
  assertMayDecide(req, actor, policies);
  return { ...req, status: 'denied', decidedBy: actor.user, decidedAt: iso(now), comment };
}

export function cancel(req: AccessRequest, actor: Identity, now: number): AccessRequest {
  if (actor.user !== req.requester) throw new TransitionError(403, 'only the requester may cancel a request');
  assertPending(req, now);
  return { ...req, status: 'canceled', decidedBy: actor.user, decidedAt: iso(now) };
}

export function revoke(req: AccessRequest, actor: Identity, comment: string | null, policies: PolicySet, now: number): AccessRequest {
  if (!isApproverOf(req, actor.user, policies) && !policies.isAdmin(actor.user)) {
    throw new TransitionError(403, 'only an approver of this request or an admin may revoke it');
  }
  const status = effectiveStatus(req, now);
  if (status !== 'approved') throw new TransitionError(409, `request is ${status}, only an approved grant can be revoked`);
  return { ...req, status: 'revoked', decidedBy: actor.user, decidedAt: iso(now), comment };
}

/** The recorded form of an expiry the clock has already made true; null if nothing to record. */
export function expire(req: AccessRequest, now: number): AccessRequest | null {
  if (req.status !== 'pending' && req.status !== 'approved') return null;
  return effectiveStatus(req, now) === 'expired' ? { ...req, status: 'expired' } : null;
}

/** Who may see a request: its requester, its approvers, admins. */
export function mayView(req: Visibility, user: string, policies: PolicySet): boolean {
  return req.requester === user || isApproverOf(req, user, policies) || policies.isAdmin(user);
}

function assertPending(req: AccessRequest, now: number): void {
  const status = effectiveStatus(req, now);
  if (status !== 'pending') throw new TransitionError(409, `request is ${status}, not pending`);
}

function assertMayDecide(req: AccessRequest, actor: Identity, policies: PolicySet): void {
  if (actor.user === req.requester) throw new TransitionError(403, 'you cannot approve or deny your own request');
  const { group } = approvalRule(req, policies);
  if (!policies.isMember(group, actor.user)) {
    throw new TransitionError(403, `only members of approver group "${group ?? '(none)'}" may decide this request`);
  }
  const policy = policies.policies.get(req.policy);
  if (policy?.requireMfa && !actor.amr.includes('mfa')) throw new TransitionError(403, 'this policy requires an MFA-authenticated token (amr must contain "mfa")');
}
