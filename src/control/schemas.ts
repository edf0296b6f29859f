import { z } from 'zod';
import { LIST_LIMIT } from '../grants/service.js';

// Control and format characters have no place in names, tickets or query values, and
// would make audit lines and approver pages lie about what was asked for.
const printable = (max: number) =>
  z
    .string()
    .max(max)
    .regex(/^[^\p{Cc}\p{Cf}]*$/u, 'must not contain control or invisible characters');

const name = printable(200).trim().min(1);

/** Free text (reasons, comments): lines and tabs, but no other control or invisible characters (bidi overrides would disguise it on the approver page). */
const prose = (max: number) =>
  z
    .string()
    .max(max)
    .regex(/^(?:[^\p{Cc}\p{Cf}]|[\n\t])*$/u, 'must not contain control or invisible characters (other than line breaks and tabs)');

/** A PowerShell parameter name, as a policy's `parameters` rules name them. */
const parameterName = z
  .string()
  .max(100)
  .regex(/^[A-Za-z][A-Za-z0-9_]*$/, 'parameter names are letters, digits and _ (no leading dash)');

export const createRequestBody = z
  .strictObject({
    task: name.optional(),
    role: name.optional(),
    reason: prose(2000).optional(),
    durationHours: z.number().positive().max(24 * 365).optional(),
    parameters: z.record(parameterName, z.string().max(1000)).optional(),
    ticket: printable(200).optional(),
  })
  .refine((b) => (b.task === undefined) !== (b.role === undefined), { message: 'give exactly one of task or role', path: ['task'] });

export const decisionBody = z.strictObject({ comment: prose(2000).optional() });

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
