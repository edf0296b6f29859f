import { z } from 'zod';

export const createRequestBody = z
  .strictObject({
    task: z.string().trim().min(1).max(200).optional(),
    role: z.string().trim().min(1).max(200).optional(),
    reason: z.string().max(2000).optional(),
    durationHours: z.number().positive().max(24 * 365).optional(),
    parameters: z.record(z.string().min(1).max(100), z.string().max(1000)).optional(),
    ticket: z.string().max(200).optional(),
  })
  .refine((b) => (b.task === undefined) !== (b.role === undefined), { message: 'give exactly one of task or role', path: ['task'] });

export const decisionBody = z.strictObject({ comment: z.string().max(2000).optional() });

export const listQuery = z.object({
  status: z.enum(['pending', 'approved', 'denied', 'canceled', 'expired', 'revoked']).optional(),
  requester: z.string().min(1).max(320).optional(),
});

export const reviewQuery = z.object({
  from: z.iso.datetime({ offset: true }).optional(),
  to: z.iso.datetime({ offset: true }).optional(),
});
