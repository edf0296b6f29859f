/** The policy file most integration tests run against. */
export const TEST_POLICIES = `
version: 1
settings:
  defaultApproverGroup: pam-approvers
  adminGroup: pam-admins
  systemAccounts: [svc-backup@contoso.com]
  defaultDurationHours: 4
  maxDurationHours: 24
  pendingExpiryHours: 24
  # Tests file many requests per user quickly; the creation rate limit is tested on its own (test/state/bounded-state.test.ts).
  requestRateBurst: 100000
  # the suites send thousands of refused requests from one client on purpose
  refusalBurst: 1000000
  refusalsPerSecond: 1000000
identity:
  jwt:
    secret: \${PAMGATE_JWT_SECRET}
groups:
  pam-approvers: [alice@contoso.com, bob@contoso.com]
  pam-admins: [root@contoso.com]
  journal-approvers: [carol@contoso.com, dave@contoso.com]
roles:
  Journaling: [New-JournalRule, Set-JournalRule, Remove-JournalRule]
policies:
  - id: journal-rules
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
    approvals: 2
  - id: transport-rules
    task: '*-TransportRule'
  - id: mailbox-search
    task: Search-Mailbox
    approval: auto
`;
