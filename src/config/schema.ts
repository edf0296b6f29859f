import { z } from 'zod';
import { parseTrustedProxy } from '../proxy/client-address.js';

/** A cmdlet name as written in policies: optional module prefix, letters, digits, dashes, globs. */
const taskPattern = z
  .string()
  .min(1)
  .regex(/^([A-Za-z0-9_.]+\\)?[A-Za-z0-9_*?-]+$/, 'task must be a cmdlet name such as New-JournalRule (globs * and ? allowed)');

const concreteTask = z
  .string()
  .min(1)
  .regex(/^([A-Za-z0-9_.]+\\)?[A-Za-z0-9_-]+$/, 'role tasks must be plain cmdlet names (no globs)');

const hours = z.number().positive().max(24 * 365);

const parameterRule = z
  .strictObject({
    oneOf: z.array(z.union([z.string(), z.number(), z.boolean()])).min(1).optional(),
    pattern: z.string().min(1).optional(),
  })
  .refine((r) => r.oneOf !== undefined || r.pattern !== undefined, 'a parameter rule needs oneOf or pattern');

const policy = z
  .strictObject({
    id: z.string().regex(/^[a-z0-9-]+$/, 'id must match [a-z0-9-]+'),
    task: taskPattern.optional(),
    role: z.string().min(1).optional(),
    approval: z.enum(['manual', 'auto']).default('manual'),
    approverGroup: z.string().min(1).optional(),
    approvals: z.number().int().min(1).max(10).default(1),
    maxDurationHours: hours.optional(),
    requireReason: z.boolean().default(true),
    requireTicket: z.boolean().default(false),
    requireMfa: z.boolean().default(false),
    parameters: z.record(z.string().min(1), parameterRule).optional(),
  })
  .refine((p) => (p.task === undefined) !== (p.role === undefined), 'a policy needs exactly one of task or role');

const settings = z.strictObject({
  enabled: z.boolean().default(true),
  mode: z.enum(['enforce', 'report-only']).default('enforce'),
  defaultApproverGroup: z.string().min(1).optional(),
  adminGroup: z.string().min(1).optional(),
  systemAccounts: z.array(z.string().min(1)).default([]),
  defaultDurationHours: hours.default(4),
  maxDurationHours: hours.default(24),
  pendingExpiryHours: hours.default(24),
  maxBodyBytes: z.number().int().min(1024).max(64 * 1024 * 1024).default(1024 * 1024),
  /** Pending requests one user may have open at once (429 beyond). */
  maxPendingPerUser: z.number().int().min(1).max(10_000).default(20),
  /** Refused requests (no identity, no grant, unreadable) one client — address and user — may collect at once on the proxy; past them, 429 unread. */
  refusalBurst: z.number().int().min(1).max(1_000_000).default(30),
  /** Refusals per second a client earns back. */
  refusalsPerSecond: z.number().positive().max(1_000_000).default(5),
  /** Active grants one user may hold for an `auto` policy to still approve at once (429 beyond); approvers are not capped. */
  maxActiveGrantsPerUser: z.number().int().min(1).max(10_000).default(50),
  /** Peers (addresses or CIDR blocks) whose X-Forwarded-For names the client recorded as `remote`. */
  trustedProxies: z.array(z.string().refine((e) => parseTrustedProxy(e) !== null, 'trustedProxies entries must be IP addresses or CIDR blocks such as 10.0.0.0/8')).max(1000).default([]),
  /** Requests one user may file at once before the rate applies (a token bucket of this size; 429 with Retry-After beyond). */
  requestRateBurst: z.number().int().min(1).max(1_000_000).default(10),
  /** Requests one user may file per hour once the burst is spent (the bucket's refill). */
  requestRatePerHour: z.number().positive().max(3_600_000).default(60),
  /**
   * How long a closed request (denied, canceled, expired, revoked) stays in the state after it
   * closed; then it is removed from memory and the store. The audit file keeps the evidence.
   */
  closedRequestRetentionDays: z.number().min(0).max(3650).default(30),
});

const identity = z.strictObject({
  jwt: z
    .strictObject({
      secret: z.string().min(16, 'secret must be at least 16 characters').optional(),
      jwksFile: z.string().min(1).optional(),
      jwksUrl: z.url().optional(),
      issuer: z.string().min(1).optional(),
      audience: z.string().min(1).optional(),
      userClaim: z.string().min(1).default('upn'),
      /**
       * Claims tried, in order, when a token lacks userClaim (contract §3: preferred_username, then
       * sub). [] turns the fallback off: where a fallback claim is user-editable, a token without
       * userClaim could otherwise name someone else and use their grants.
       */
      userClaimFallback: z.array(z.string().min(1)).max(8).default(['preferred_username', 'sub']),
    })
    .refine(
      (j) => [j.secret, j.jwksFile, j.jwksUrl].filter((v) => v !== undefined).length === 1,
      'identity.jwt needs exactly one of secret, jwksFile or jwksUrl',
    ),
});

const notify = z.strictObject({
  /** nodemailer transport URL, e.g. smtp://mail.contoso.com:587 or smtps://user:pass@host */
  smtp: z.string().regex(/^smtps?:\/\//, 'smtp must be an smtp:// or smtps:// URL'),
  from: z.string().regex(/^[^@\s]+@[^@\s]+$/, 'from must be an e-mail address'),
  /** Link to the approver page in mails; default: the control listener's /ui. */
  uiUrl: z.url().optional(),
  /** Waits before each new try of a mail the server did not take for a passing reason (4xx, connection); [] never retries. */
  retrySeconds: z.array(z.number().min(0.01).max(3600)).max(10).default([5, 30, 120]),
});

export const policyFileSchema = z.strictObject({
  version: z.literal(1),
  settings: settings.prefault({}),
  identity: identity.optional(),
  notify: notify.optional(),
  groups: z.record(z.string().min(1), z.array(z.string().min(1))).default({}),
  roles: z.record(z.string().min(1), z.array(concreteTask).min(1)).default({}),
  policies: z.array(policy).default([]),
});

export type PolicyFile = z.infer<typeof policyFileSchema>;
export type PolicyEntry = PolicyFile['policies'][number];
export type Settings = PolicyFile['settings'];
export type ParameterRule = z.infer<typeof parameterRule>;
export type JwtConfig = NonNullable<PolicyFile['identity']>['jwt'];
export type NotifyConfig = NonNullable<PolicyFile['notify']>;
