/** Usage texts: the global one and each command's own (`pamgate help CMD`, `pamgate CMD --help`). */

const CLIENT_OPTIONS = `  --server URL    control API (default $PAMGATE_SERVER, else http://127.0.0.1:8081)
  --json          print the JSON the API returned (for scripts)
  The bearer token (JWT) is read from $PAMGATE_TOKEN.`;

export const COMMANDS: Record<string, { summary: string; usage: string }> = {
  serve: {
    summary: 'run the gateway',
    usage: `usage: pamgate serve [--config FILE]

Runs the gateway: the proxy listener (admins' traffic) and the control listener (access requests,
approver page, /healthz, /readyz, /metrics).

  --config FILE   policy file (default $PAMGATE_CONFIG, else ./policies.yaml)

environment:
  HOST, PORT, ADMIN_PORT          listeners (default 127.0.0.1, 8080, 8081)
  UPSTREAM_URL                    the admin API (unset: a built-in demo upstream)
  PAMGATE_TLS_CERT, PAMGATE_TLS_KEY  PEM files: both listeners speak HTTPS; SIGHUP re-reads them
  PAMGATE_DATA_DIR                audit file and embedded state (default ./data)
  PAMGATE_STORE                   redis://host:port to share state between instances
  PAMGATE_PUBLIC_URL              the control listener's public URL (links, error bodies)
  PAMGATE_AUDIT_MAX_BYTES         rotate the audit file at this size
  PAMGATE_AUDIT_KEY_FILE          HMAC key (outside the data dir) that keys the audit chain
  PAMGATE_AUDIT_MIN_FREE          free-space watermark of the data dir (bytes, 2GiB, 5%; 0 off)
  PAMGATE_AUDIT_RETENTION_DAYS    delete rotated segments this many days old (default: keep)
  PAMGATE_AUDIT_RETENTION_REQUIRE_EXPORT=true  delete a rotated segment only once exported
  PAMGATE_CONFIG_WATCH=off        reload the policy file on SIGHUP only
  LOG_LEVEL                       trace, debug, info (default), warn, error, fatal, silent

signals: SIGHUP re-reads the policy file and the TLS files; SIGTERM drains and exits 0.`,
  },
  check: {
    summary: 'validate a policy file',
    usage: `usage: pamgate check [FILE]

Validates a policy file (default $PAMGATE_CONFIG, else ./policies.yaml). Prints FILE:LINE:COL: message
for each error and exits 1; prints "FILE: ok, N policies" and exits 0 when it is valid.`,
  },
  explain: {
    summary: 'show how a task would be decided',
    usage: `usage: pamgate explain --user U --task T [--params JSON] [--config FILE]

Prints the decision for user U running task T (with parameters JSON) under the policy file, and why.`,
  },
  audit: {
    summary: 'verify, search, follow or export the audit file',
    usage: `usage: pamgate audit verify [FILE|DIR] [--key-file F]
       pamgate audit search [FILE|DIR] [--type T] [--actor U] [--task T] [--request ID] [--since ISO] [--until ISO] [--json]
       pamgate audit tail [FILE|DIR] [-n N] [-f] [--json]
       pamgate audit export DEST [DIR]

  verify   check the hash chain (a data dir: every segment); prints "ok N events", else names the first bad line;
           with --key-file (the gateway's PAMGATE_AUDIT_KEY_FILE) every line's mac and audit.head's too
  search   events matching every filter given (--type takes a glob such as 'task.*')
  tail     the last N events (default 10); -f keeps printing new ones as they are written
  export   copy rotated segments not yet exported to DEST (checked by sha256), mark them exported
  --json   one JSON object per line instead of a table (time, type, actor, task, request)

FILE defaults to $PAMGATE_DATA_DIR/audit.jsonl (PAMGATE_DATA_DIR default ./data).`,
  },
  request: {
    summary: 'ask for access to a task or role',
    usage: `usage: pamgate request (--task T | --role R) --reason TEXT [--duration HOURS] [--ticket T] [--param K=V]...

Files an access request. --duration over the policy's maximum is refused, naming the maximum.

${CLIENT_OPTIONS}`,
  },
  requests: {
    summary: 'list access requests',
    usage: `usage: pamgate requests [--status pending|approved|denied|canceled|expired|revoked]

Lists the requests you may see: your own, and those you may approve.

${CLIENT_OPTIONS}`,
  },
  approve: {
    summary: 'approve a request',
    usage: `usage: pamgate approve ID [--comment TEXT]

Records your approval of request ID; prints who approved and what remains (approvals still needed,
or the grant's expiry).

${CLIENT_OPTIONS}`,
  },
  deny: {
    summary: 'deny a request',
    usage: `usage: pamgate deny ID [--comment TEXT]

Denies request ID (final).

${CLIENT_OPTIONS}`,
  },
  cancel: {
    summary: 'withdraw your pending request',
    usage: `usage: pamgate cancel ID

${CLIENT_OPTIONS}`,
  },
  revoke: {
    summary: 'end an approved grant now',
    usage: `usage: pamgate revoke ID [--comment TEXT]

${CLIENT_OPTIONS}`,
  },
  token: {
    summary: 'mint a development token',
    usage: `usage: pamgate token --user U [--amr mfa] [--hours H] [--config FILE]

Mints an HS256 token signed with identity.jwt.secret (development and tests only).`,
  },
  help: {
    summary: 'show help for a command',
    usage: `usage: pamgate help [COMMAND]`,
  },
};

export const USAGE = `usage: pamgate <command> [options]

commands:
${Object.entries(COMMANDS)
  .map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`)
  .join('\n')}

pamgate help COMMAND (or pamgate COMMAND --help) shows a command's options; pamgate --version its version.`;
