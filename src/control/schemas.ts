import { z } from 'zod';
import { LIST_LIMIT } from '../grants/service.js';

/** Longest reason, comment and ticket a request carries: everything a request holds is kept in memory and in the store. */
export const MAX_REASON_CHARS = 1000;
export const MAX_COMMENT_CHARS = 1000;
export const MAX_TICKET_CHARS = 200;
/** Longest value of a requested parameter, and most parameters one request may name at all (the service also caps those its policy has no rule for). */
export const MAX_PARAMETER_VALUE_CHARS = 500;
export const MAX_PARAMETERS = 64;

const atMost = (max: number): string => `at most ${max} characters`;

// Control and format characters have no place in names, tickets or query values, and
// would make audit lines and approver pages lie about what was asked for.
const printable = (max: number) =>
  z
    .string()
    .max(max, atMost(max))
    .regex(/^[^\p{Cc}\p{Cf}]*$/u, 'must not contain control or invisible characters');

const name = printable(200).trim().min(1);

/** Free text (reasons, comments): lines and tabs, but no other control or invisible characters (bidi overrides would disguise it on the approver page). */
const prose = (max: number) =>
  z
    .string()
    .max(max, atMost(max))
    .regex(/^(?:[^\p{Cc}\p{Cf}]|[\n\t])*$/u, 'must not contain control or invisible characters (other than line breaks and tabs)');

/** A PowerShell parameter name, as a policy's `parameters` rules name them. */
const parameterName = z
  .string()
  .max(100, atMost(100))
  .regex(/^[A-Za-z][A-Za-z0-9_]*$/, 'parameter names are letters, digits and _ (no leading dash)');

export const createRequestBody = z
  .strictObject({
    task: name.optional(),
    role: name.optional(),
    reason: prose(MAX_REASON_CHARS).optional(),
    durationHours: z.number().positive().max(24 * 365).optional(),
    parameters: z
      .record(parameterName, z.string().max(MAX_PARAMETER_VALUE_CHARS, atMost(MAX_PARAMETER_VALUE_CHARS)))
      .refine((p) => Object.keys(p).length <= MAX_PARAMETERS, `at most ${MAX_PARAMETERS} parameters`)
      .optional(),
    ticket: printable(MAX_TICKET_CHARS).optional(),
  })
  .refine((b) => (b.task === undefined) !== (b.role === undefined), { message: 'give exactly one of task or role', path: ['task'] });

export const decisionBody = z.strictObject({ comment: prose(MAX_COMMENT_CHARS).optional() });

export const listQuery = z.strictObject({
  status: z.enum(['pending', 'approved', 'denied', 'canceled', 'expired', 'revoked']).optional(),
  requester: printable(320).min(1).optional(),
  limit: z.coerce.number().int().min(1).max(LIST_LIMIT).optional(),
  after: printable(200).min(1).optional(),
});

export const reviewQuery = z.strictObject({
  from: z.iso.datetime({ offset: true }).optional(),
  to: z.iso.datetime({ offset: true }).optional(),
});
