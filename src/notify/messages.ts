import type { AuditEvent } from '../audit/log.js';
import type { AccessRequest } from '../grants/model.js';
import type { PolicySet } from '../policy/compile.js';

/** One e-mail to send. */
export interface Message {
  to: string[];
  subject: string;
  text: string;
}

const isAddress = (user: string): boolean => /^[^@\s]+@[^@\s]+$/.test(user);

/**
 * Who hears about a committed change, and what they read. Pure: the approvers of a new
 * request, and the requester when it is decided or revoked.
 */
export function messagesFor(req: AccessRequest, event: AuditEvent, policies: PolicySet, uiUrl: string): Message[] {
  const what = req.task ?? `role ${req.role}`;
  const facts = [
    `Request:   ${req.id}`,
    `Requester: ${req.requester}`,
    `Task:      ${what} (policy ${req.policy})`,
    `Reason:    ${req.reason || '(none)'}`,
    ...(req.ticket ? [`Ticket:    ${req.ticket}`] : []),
    `Duration:  ${req.durationHours} h`,
  ].join('\n');

  switch (event.type) {
    case 'request.created': {
      if (req.status !== 'pending') return [];
      const to = policies.members(req.approverGroup).filter((u) => u !== req.requester && isAddress(u));
      if (to.length === 0) return [];
      return [
        {
          to,
          subject: `[pamgate] ${req.requester} requests ${what}`,
          text: `${req.requester} asks for access that needs ${req.approvalsRequired} approval(s) from ${req.approverGroup}.\n\n${facts}\n\nReview it at ${uiUrl}\nor: pamgate approve ${req.id}   /   pamgate deny ${req.id} --comment "…"\n`,
        },
      ];
    }
    case 'request.approved':
      if (req.status !== 'approved' || !isAddress(req.requester)) return [];
      return [{ to: [req.requester], subject: `[pamgate] approved: ${what}`, text: `Your request was approved by ${req.approvals.map((a) => a.approver).join(', ') || 'policy (auto)'}.\nThe grant is valid until ${req.expiresAt}.\n\n${facts}\n` }];
    case 'request.denied':
      if (!isAddress(req.requester)) return [];
      return [{ to: [req.requester], subject: `[pamgate] denied: ${what}`, text: `Your request was denied by ${req.decidedBy}${req.comment ? `: ${req.comment}` : ''}.\n\n${facts}\n` }];
    case 'grant.revoked':
      if (!isAddress(req.requester)) return [];
      return [{ to: [req.requester], subject: `[pamgate] revoked: ${what}`, text: `Your grant was revoked by ${req.decidedBy}${req.comment ? `: ${req.comment}` : ''}. Further calls are blocked.\n\n${facts}\n` }];
    default:
      return [];
  }
}
