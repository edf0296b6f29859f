import type { PolicyEntry, PolicyFile, Settings } from '../config/schema.js';
import { compileGlob, isGlob, taskKey, type GlobMatcher } from './names.js';
import { compileParamRules, type CompiledParamRule } from './params.js';
import { narrowestGlob } from './precedence.js';

export interface CompiledPolicy {
  id: string;
  /** What the policy names: a task (maybe a glob) or a role. */
  task: string | null;
  role: string | null;
  /** Task keys the policy covers exactly (empty for a glob policy). */
  taskKeys: ReadonlySet<string>;
  glob: GlobMatcher | null;
  approval: 'manual' | 'auto';
  approverGroup: string | null;
  approvals: number;
  maxDurationHours: number;
  requireReason: boolean;
  requireTicket: boolean;
  requireMfa: boolean;
  paramRules: readonly CompiledParamRule[];
}

/** The policy file compiled for lookups whose cost does not grow with the number of policies. */
export class PolicySet {
  readonly settings: Settings;
  readonly policies: ReadonlyMap<string, CompiledPolicy>;
  private readonly exact = new Map<string, CompiledPolicy[]>();
  private readonly globs: CompiledPolicy[] = [];
  private readonly globCache = new Map<string, CompiledPolicy[] | null>();
  private readonly groups = new Map<string, ReadonlySet<string>>();
  private readonly roles = new Map<string, string[]>();
  private readonly systemAccounts: ReadonlySet<string>;

  constructor(source: PolicyFile) {
    this.settings = source.settings;
    for (const [name, members] of Object.entries(source.groups)) {
      this.groups.set(name, new Set(members.map((m) => m.toLowerCase())));
    }
    for (const [name, tasks] of Object.entries(source.roles)) this.roles.set(name, tasks.map(taskKey));
    this.systemAccounts = new Set(source.settings.systemAccounts.map((a) => a.toLowerCase()));

    const byId = new Map<string, CompiledPolicy>();
    // Specific before general: task policies first, then role policies, so the first
    // policy cited for a task is the one naming it.
    const ordered = [...source.policies].sort((a, b) => rank(a) - rank(b));
    for (const entry of ordered) {
      const policy = this.compile(entry);
      byId.set(policy.id, policy);
      if (policy.glob) this.globs.push(policy);
      for (const key of policy.taskKeys) {
        const list = this.exact.get(key);
        if (list === undefined) this.exact.set(key, [policy]);
        else if (tier(list[0]!) === tier(policy)) list.push(policy);
        // else a more specific policy (a task policy over a role) already governs this task
      }
    }
    this.policies = byId;
  }

  /**
   * The policies governing a task key: those of the most specific tier that names it —
   * a task policy, else role policies, else globs. A grant counts only under one of these,
   * so a lenient role policy never overrides a stricter policy written for the task itself.
   */
  policiesFor(key: string): readonly CompiledPolicy[] | null {
    const exact = this.exact.get(key);
    if (exact) return exact;
    if (this.globs.length === 0) return null;
    let hit = this.globCache.get(key);
    if (hit === undefined) {
      // The narrowest glob governs: a load refuses globs that overlap without one containing the other.
      const found = narrowestGlob(this.globs.filter((p) => p.glob!.test(key)));
      hit = found.length > 0 ? found : null;
      if (this.globCache.size >= 10_000) this.globCache.clear();
      this.globCache.set(key, hit);
    }
    return hit;
  }

  /** The policy a new access request for this task is filed under: the most specific one. */
  policyForTask(task: string): CompiledPolicy | null {
    return this.policiesFor(taskKey(task))?.[0] ?? null;
  }

  policyForRole(role: string): CompiledPolicy | null {
    for (const p of this.policies.values()) if (p.role !== null && p.role.toLowerCase() === role.toLowerCase()) return p;
    return null;
  }

  roleTasks(role: string): readonly string[] | null {
    for (const [name, tasks] of this.roles) if (name.toLowerCase() === role.toLowerCase()) return tasks;
    return null;
  }

  isMember(group: string | null | undefined, user: string): boolean {
    return group != null && (this.groups.get(group)?.has(user) ?? false);
  }

  members(group: string | null | undefined): readonly string[] {
    return group == null ? [] : [...(this.groups.get(group) ?? [])];
  }

  isAdmin(user: string): boolean {
    return this.isMember(this.settings.adminGroup, user);
  }

  isSystemAccount(user: string): boolean {
    return this.systemAccounts.has(user);
  }

  private compile(entry: PolicyEntry): CompiledPolicy {
    const glob = entry.task !== undefined && isGlob(entry.task) ? compileGlob(entry.task) : null;
    const taskKeys = new Set<string>();
    if (entry.task !== undefined && !glob) taskKeys.add(taskKey(entry.task));
    if (entry.role !== undefined) for (const t of this.roles.get(entry.role) ?? []) taskKeys.add(t);
    const s = this.settings;
    return {
      id: entry.id,
      task: entry.task ?? null,
      role: entry.role ?? null,
      taskKeys,
      glob,
      approval: entry.approval,
      approverGroup: entry.approval === 'manual' ? entry.approverGroup ?? s.defaultApproverGroup ?? null : entry.approverGroup ?? null,
      approvals: entry.approvals,
      maxDurationHours: Math.min(entry.maxDurationHours ?? s.maxDurationHours, s.maxDurationHours),
      requireReason: entry.requireReason,
      requireTicket: entry.requireTicket,
      requireMfa: entry.requireMfa,
      paramRules: compileParamRules(entry.parameters),
    };
  }
}

function tier(p: CompiledPolicy): number {
  return p.role !== null ? 1 : 0;
}

/** Tasks of role policies that a more specific policy governs instead (for `pamgate check`). */
export function shadowedRoleTasks(set: PolicySet): { policy: string; role: string; task: string; governedBy: string }[] {
  const out: { policy: string; role: string; task: string; governedBy: string }[] = [];
  for (const p of set.policies.values()) {
    if (p.role === null) continue;
    for (const key of p.taskKeys) {
      const governing = set.policiesFor(key) ?? [];
      if (!governing.includes(p)) out.push({ policy: p.id, role: p.role, task: key, governedBy: governing.map((g) => g.id).join(', ') });
    }
  }
  return out;
}

function rank(p: PolicyEntry): number {
  if (p.task !== undefined) return isGlob(p.task) ? 2 : 0;
  return 1;
}
