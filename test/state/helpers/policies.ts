/** Policies for the state tests: a 2-approver and a 3-of-5 policy, an auto-approved task, ungated traffic. */
export const STATE_POLICIES = `
version: 1
settings:
  defaultApproverGroup: pam-approvers
  adminGroup: pam-admins
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
  quorum: [q1@contoso.com, q2@contoso.com, q3@contoso.com, q4@contoso.com, q5@contoso.com]
policies:
  - id: journal-rules
    task: New-JournalRule
  - id: mailbox-removal
    task: Remove-Mailbox
    approvals: 2
  - id: transport-config
    task: Set-TransportConfig
    approverGroup: quorum
    approvals: 3
  - id: mailbox-search
    task: Search-Mailbox
    approval: auto
`;

/** STATE_POLICIES plus one more gated task (for reload tests). */
export const STATE_POLICIES_PLUS = STATE_POLICIES + `  - id: mailbox-export
    task: New-MailboxExportRequest
`;
