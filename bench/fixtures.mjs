// Policy files, seeded grant state, tokens and request bodies shared by bench/run.mjs and
// bench/micro.mjs. Everything here goes through the layers the gateway itself uses: policy
// files are YAML read by the gateway's loader, grants are AccessRequests in the embedded
// journal store (serialised by keyv exactly as the store writes them).
import { randomUUID } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import Keyv from 'keyv';
import { SignJWT } from 'jose';

export const JWT_SECRET = 'bench-secret-0123456789abcdef-not-for-production';
export const BENCH_USER = 'bench@contoso.com';
export const APPROVER = 'alice@contoso.com';
export const TENANT_PATH = '/adminapi/beta/contoso.onmicrosoft.com/InvokeCommand';

/** The request bodies wrk sends, one per scenario. */
export const BODIES = {
  // (a) ungated: a read-only cmdlet no policy names
  a: { CmdletInput: { CmdletName: 'Get-Mailbox', Parameters: { Identity: 'shared@contoso.com', ResultSize: 10 } } },
  // (b)/(d) gated, granted: parameter-ruled policy, grant scoped to this mailbox
  b: { CmdletInput: { CmdletName: 'Add-MailboxPermission', Parameters: { Identity: 'shared@contoso.com', User: BENCH_USER, AccessRights: 'ReadPermission' } } },
  // (c) gated, no grant: the gateway answers 403 and audits task.blocked
  c: { CmdletInput: { CmdletName: 'Remove-Mailbox', Parameters: { Identity: 'former.employee@contoso.com', Confirm: false } } },
};
BODIES.d = BODIES.b;
export const CMDLET = { a: 'Get-Mailbox', b: 'Add-MailboxPermission', c: 'Remove-Mailbox', d: 'Add-MailboxPermission' };

/** The grant the bench user files (and an approver approves) through the control API. */
export const BENCH_REQUEST = { task: 'Add-MailboxPermission', reason: 'benchmark: read access to the shared mailbox', parameters: { Identity: 'shared@contoso.com' }, durationHours: 8 };

const HEADER = `version: 1
settings:
  defaultApproverGroup: pam-approvers
  adminGroup: pam-admins
  systemAccounts: [svc-backup@contoso.com]
  defaultDurationHours: 4
  maxDurationHours: 24
  pendingExpiryHours: 24
  # (c) measures the refusal path itself at full speed from one client: no refusal budget
  refusalBurst: 1000000
  refusalsPerSecond: 1000000
identity:
  jwt:
    secret: \${PAMGATE_JWT_SECRET}
    userClaim: upn
groups:
  pam-approvers: [alice@contoso.com, bob@contoso.com]
  pam-admins: [root@contoso.com]
  journal-approvers: [carol@contoso.com, dave@contoso.com]
  security-officers: [alice@contoso.com, carol@contoso.com, dave@contoso.com]
`;

/** Ten policies: tasks, a role, a glob, parameter rules, auto approval, MFA. */
const BASE_ROLES = `  Journaling: [New-JournalRule, Set-JournalRule, Remove-JournalRule]
`;
const BASE_POLICIES = `  - id: journal-rules
    task: New-JournalRule
    approverGroup: journal-approvers
    maxDurationHours: 8
  - id: journaling-role
    role: Journaling
  - id: mailbox-permissions
    task: Add-MailboxPermission
    parameters:
      AccessRights: { oneOf: [ReadPermission] }
      Identity: { pattern: '^[^@]+@contoso\\.com$' }
  - id: mailbox-removal
    task: Remove-Mailbox
    approverGroup: security-officers
    approvals: 2
    maxDurationHours: 2
    requireTicket: true
  - id: transport-rules
    task: '*-TransportRule'
  - id: mailbox-search
    task: Search-Mailbox
    approval: auto
    maxDurationHours: 1
  - id: retention-policy
    task: Set-RetentionPolicy
  - id: role-assignment
    task: New-ManagementRoleAssignment
    requireMfa: true
  - id: dlp-removal
    task: Remove-DlpCompliancePolicy
    approverGroup: security-officers
  - id: org-config
    task: Set-OrganizationConfig
`;
const BASE_COUNT = 10;
const LARGE_ROLES = 100;
const LARGE_GLOBS = 20;

/** Generated policy ids/tasks of the large file, so grants can be seeded against them. */
function largeSpec(total) {
  const roles = [];
  const globs = [];
  const tasks = [];
  for (let r = 0; r < LARGE_ROLES; r++) roles.push({ id: `bench-role-${r}`, role: `BenchRole${r}`, tasks: [0, 1, 2].map((k) => `Set-BenchRole${r}Task${k}`) });
  // Ending in 'Item' keeps them apart from '*-TransportRule': overlapping globs of one precedence are a load error.
  for (let g = 0; g < LARGE_GLOBS; g++) globs.push({ id: `bench-glob-${g}`, task: `Remove-BenchGlob${g}*Item` });
  const exact = total - BASE_COUNT - LARGE_ROLES - LARGE_GLOBS;
  for (let i = 0; i < exact; i++) tasks.push({ id: `bench-task-${i}`, task: `Set-BenchTask${i}`, ruled: i % 10 === 0 });
  return { roles, globs, tasks };
}

/** `count` policies (10 or more): the ten above plus generated tasks, roles and globs. */
export function policyYaml(count) {
  if (count <= BASE_COUNT) return `${HEADER}roles:\n${BASE_ROLES}policies:\n${BASE_POLICIES}`;
  const { roles, globs, tasks } = largeSpec(count);
  const groups = ['pam-approvers', 'journal-approvers', 'security-officers'];
  let out = `${HEADER}roles:\n${BASE_ROLES}`;
  for (const r of roles) out += `  ${r.role}: [${r.tasks.join(', ')}]\n`;
  out += `policies:\n${BASE_POLICIES}`;
  for (const r of roles) out += `  - id: ${r.id}\n    role: ${r.role}\n`;
  for (const g of globs) out += `  - id: ${g.id}\n    task: '${g.task}'\n`;
  tasks.forEach((t, i) => {
    out += `  - id: ${t.id}\n    task: ${t.task}\n    approverGroup: ${groups[i % groups.length]}\n`;
    if (t.ruled) out += `    parameters:\n      Identity: { pattern: '^[^@]+@(contoso|fabrikam)\\.com$' }\n`;
  });
  return out;
}

const HOUR = 3_600_000;

/**
 * `count` approved, unexpired AccessRequests held by other users (5 each), spread over the
 * large file's task and role policies, 1 in 50 on the benchmark's own gated cmdlet.
 */
export function* otherUsersGrants(count, policyCount, now) {
  const { roles, tasks } = largeSpec(policyCount);
  if (count > 0 && tasks.length === 0) throw new Error(`seeding grants needs generated task policies: --policies must be at least ${BASE_COUNT + LARGE_ROLES + LARGE_GLOBS + 1} (got ${policyCount})`);
  const iso = (ms) => new Date(ms).toISOString();
  for (let i = 0; i < count; i++) {
    const requester = `user${Math.floor(i / 5)}@contoso.com`;
    let policy, task = null, role = null, keys, parameters = null;
    if (i % 50 === 0) {
      policy = 'mailbox-permissions'; task = 'Add-MailboxPermission'; keys = ['add-mailboxpermission'];
      parameters = { Identity: `mailbox${i}@contoso.com` };
    } else if (i % 10 === 1) {
      const r = roles[i % roles.length];
      policy = r.id; role = r.role; keys = r.tasks.map((t) => t.toLowerCase());
    } else {
      const t = tasks[(i * 7919) % tasks.length];
      policy = t.id; task = t.task; keys = [t.task.toLowerCase()];
    }
    const created = now - 10 * 60_000;
    const approved = now - 5 * 60_000;
    yield {
      id: randomUUID(), requester, task, role, tasks: keys, policy,
      approverGroup: 'pam-approvers', approvalsRequired: 1,
      reason: 'seeded by bench/fixtures.mjs', ticket: null, parameters, durationHours: 20,
      status: 'approved', createdAt: iso(created), pendingExpiresAt: iso(created + 24 * HOUR),
      approvals: [{ approver: APPROVER, at: iso(approved), comment: null }],
      approvedAt: iso(approved), expiresAt: iso(approved + 20 * HOUR),
      decidedBy: APPROVER, decidedAt: iso(approved), comment: null,
    };
  }
}

/**
 * Writes `dataDir/state.journal` as the embedded store would hold it after `requests` were
 * put: keyv (namespace "pamgate", key "req:<id>") serialises each value, the journal stores
 * one `{"k","v"}` line per key. One write instead of one fdatasync'ed append per request.
 */
export async function seedJournal(dataDir, requests) {
  await mkdir(dataDir, { recursive: true });
  const captured = new Map();
  const keyv = new Keyv({ store: captured, namespace: 'pamgate' });
  const lines = [];
  let n = 0;
  for (const req of requests) {
    await keyv.set(`req:${req.id}`, req);
    n++;
  }
  for (const [k, v] of captured) lines.push(JSON.stringify({ k, v }));
  await writeFile(join(dataDir, 'state.journal'), lines.join('\n') + '\n');
  return n;
}

export function token(user, secret = JWT_SECRET, hours = 8) {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ upn: user, amr: ['pwd'] })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(user)
    .setIssuedAt(now)
    .setExpirationTime(now + hours * 3600)
    .sign(new TextEncoder().encode(secret));
}
