import type { AuditEvent } from '../audit/log.js';
import type { AuditSink } from './service.js';

/** Why a gated task was refused although the audit file is fine. */
export class GrantsUnknownError extends Error {
  constructor() {
    super('the shared state store is unreachable or out of date, so no grant can be trusted; gated tasks are refused (fail closed)');
  }
}

/**
 * The audit sink the proxy writes through. While the grant view may be stale (`fresh()` false:
 * the shared store is down or its last good sync is too old), every decision that rests on
 * grants — a would-be `task.executed`, or a `task.blocked` that a grant held elsewhere might
 * have turned into a pass — is recorded as a block with `status: 503` and then fails, which the
 * proxy answers with 503 and never forwards. Decisions that do not depend on grants (system
 * accounts, report-only/disabled modes, unreadable requests) pass through unchanged.
 *
 * This rides on the proxy's existing rule "audit failed → 503", so the hot path gains one
 * boolean check on gated requests and nothing at all on ungated ones.
 */
export function failClosedAudit(audit: AuditSink, fresh: () => boolean): AuditSink {
  return {
    append(event: AuditEvent): Promise<void> {
      if (fresh() || !restsOnGrants(event)) return audit.append(event);
      return refuse(audit, event);
    },
  };
}

function restsOnGrants(event: AuditEvent): boolean {
  return (event.type === 'task.executed' || event.type === 'task.blocked') && event.policy != null && event['mode'] === undefined;
}

async function refuse(audit: AuditSink, event: AuditEvent): Promise<never> {
  await audit.append({ ...event, type: 'task.blocked', status: 503, reason: 'state store unavailable', ...(event.type !== 'task.blocked' ? { wouldBe: event.type } : {}) });
  throw new GrantsUnknownError();
}
