import type { PolicySet } from '../policy/compile.js';
import { paramsAllowed } from '../policy/params.js';
import { taskKey } from '../policy/names.js';

/** Human explanation of what the gateway would do with one task call by one user. */
export function explain(policies: PolicySet, user: string, task: string, params: Record<string, unknown>): string {
  const key = taskKey(task);
  const lines = [`task: ${task} (normalised: ${key})`];
  const covering = policies.policiesFor(key);
  if (covering === null) {
    lines.push('covered by: no policy', 'decision: FORWARD — the task is not gated');
    return lines.join('\n');
  }
  lines.push(`covered by: ${covering.map((p) => `${p.id} (${p.task !== null ? `task ${p.task}` : `role ${p.role}`})`).join(', ')}`);
  const who = user.toLowerCase();
  if (!policies.settings.enabled) lines.push('note: settings.enabled is false — everything is forwarded, gated tasks are audited');
  if (policies.settings.mode === 'report-only') lines.push('note: report-only mode — would-be blocks are audited as task.reported and forwarded');
  if (policies.isSystemAccount(who)) {
    lines.push(`decision: FORWARD — ${who} is a system account (audited as task.system)`);
    return lines.join('\n');
  }
  const callParams = new Map(Object.entries(params).map(([k, v]) => [k.toLowerCase(), v]));
  for (const p of covering) {
    const fits = paramsAllowed(p.paramRules, null, callParams);
    const approvers = p.approval === 'auto' ? 'auto-approved' : `${p.approvals} approval(s) from group ${p.approverGroup}`;
    lines.push(
      `  - ${p.id}: ${approvers}, up to ${p.maxDurationHours} h` +
        (p.requireReason ? ', reason required' : '') +
        (p.requireTicket ? ', ticket required' : '') +
        (p.requireMfa ? ', MFA required' : '') +
        (p.paramRules.length > 0 ? `; parameters ${fits ? 'fit' : 'do NOT fit'} its rules (${p.paramRules.map((r) => r.name).join(', ')})` : ''),
    );
  }
  lines.push(`decision: BLOCK (403) unless ${who} holds an approved, unexpired grant under ${covering.map((p) => p.id).join(' or ')} covering this call`);
  lines.push(`request it: pamgate request --task ${task} --reason "…"`);
  return lines.join('\n');
}
