import type { CompiledPolicy, PolicySet } from './compile.js';
import { paramsAllowed, type CallParams } from './params.js';

/** Who is calling, as established by a verified token. `user` is case-folded. */
export interface Identity {
  user: string;
  amr: readonly string[];
  /** Token expiry, ms since epoch, or null when the token has none. */
  expiresAt: number | null;
}

/** An approved access request, reduced to what a decision needs. */
export interface Grant {
  requestId: string;
  requester: string;
  policyId: string;
  taskKeys: ReadonlySet<string>;
  /** Parameter values the requester asked to be held to (case-folded names). */
  scope: Readonly<Record<string, string>> | null;
  expiresAt: number;
}

/** One command a request would make the upstream run. */
export interface Command {
  /** As written by the caller, or as the upstream would read it (`Get-X` for `X`), for audit and error messages. */
  name: string;
  /** The name as written, when `name` is another reading of it. */
  calledAs?: string;
  /** Normalised with taskKey(). */
  key: string;
  params: CallParams;
}

export type Verdict =
  | { kind: 'granted'; command: Command; policy: CompiledPolicy; grant: Grant }
  | { kind: 'system'; command: Command; policy: CompiledPolicy }
  | { kind: 'unidentified'; command: Command; policy: CompiledPolicy }
  | { kind: 'ungranted'; command: Command; policy: CompiledPolicy }
  /** Grants cannot be trusted right now (shared store unreachable or stale); `seen` is what the stale view said. */
  | { kind: 'unverifiable'; command: Command; policy: CompiledPolicy; seen: 'granted' | 'ungranted' };

export interface Decision {
  /** forward: let the request through; block: answer it here with `status`. */
  action: 'forward' | 'block';
  status: 200 | 401 | 403 | 503;
  /** One verdict per gated command, in request order; empty when nothing is gated. */
  verdicts: Verdict[];
  /** enforce, or why a would-be block is let through. */
  mode: 'enforce' | 'report-only' | 'disabled';
}

/** The answer a verdict calls for; the highest one in a request wins (503 > 403 > 401 > allowed). */
const BLOCK_STATUS: Record<Verdict['kind'], 200 | 401 | 403 | 503> = { granted: 200, system: 200, unidentified: 401, ungranted: 403, unverifiable: 503 };

const NOTHING_GATED: Decision = Object.freeze({ action: 'forward', status: 200, verdicts: [], mode: 'enforce' }) as Decision;

/**
 * The whole access decision for one proxied request. Pure: same inputs, same answer.
 * A request carrying several commands is let through only if every gated one is.
 */
export function decide(
  commands: readonly Command[],
  policies: PolicySet,
  identity: Identity | null,
  grantsOf: (user: string) => readonly Grant[],
  now: number,
  grantsTrusted = true,
): Decision {
  let verdicts: Verdict[] | null = null;
  let blockedStatus: 200 | 401 | 403 | 503 = 200;
  for (const command of commands) {
    const covering = policies.policiesFor(command.key);
    if (covering === null) continue;
    const verdict = judge(command, covering, policies, identity, grantsOf, now, grantsTrusted);
    (verdicts ??= []).push(verdict);
    blockedStatus = Math.max(blockedStatus, BLOCK_STATUS[verdict.kind]) as typeof blockedStatus;
  }
  if (verdicts === null) return NOTHING_GATED;

  const mode = !policies.settings.enabled ? 'disabled' : policies.settings.mode;
  if (blockedStatus === 200 || mode !== 'enforce') return { action: 'forward', status: 200, verdicts, mode };
  return { action: 'block', status: blockedStatus, verdicts, mode };
}

function judge(
  command: Command,
  covering: readonly CompiledPolicy[],
  policies: PolicySet,
  identity: Identity | null,
  grantsOf: (user: string) => readonly Grant[],
  now: number,
  grantsTrusted: boolean,
): Verdict {
  const first = covering[0]!;
  if (identity === null) return { kind: 'unidentified', command, policy: first };
  if (policies.isSystemAccount(identity.user)) return { kind: 'system', command, policy: first };
  const verdict = matchGrant(command, covering, identity, grantsOf, now) ?? { kind: 'ungranted', command, policy: first };
  return grantsTrusted ? verdict : { kind: 'unverifiable', command, policy: verdict.policy, seen: verdict.kind };
}

function matchGrant(
  command: Command,
  covering: readonly CompiledPolicy[],
  identity: Identity,
  grantsOf: (user: string) => readonly Grant[],
  now: number,
): (Verdict & { kind: 'granted' }) | null {
  for (const grant of grantsOf(identity.user)) {
    const grantHolds = grant.expiresAt > now && grant.requester === identity.user && grant.taskKeys.has(command.key);
    if (!grantHolds) continue;
    const policy = covering.find((p) => p.id === grant.policyId);
    if (policy && paramsAllowed(policy.paramRules, grant.scope, command.params)) {
      return { kind: 'granted', command, policy, grant };
    }
  }
  return null;
}
