#!/usr/bin/env node
// The entry point loads only what the command needs: a client verb such as `pamgate requests`
// must not pay for the server's modules (pino, hono, undici, the policy compiler) at start.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { CliError } from './cli/errors.js';
import { COMMANDS, USAGE } from './cli/usage.js';

const OPTIONS = {
  config: { type: 'string' },
  'key-file': { type: 'string' },
  user: { type: 'string' },
  task: { type: 'string' },
  role: { type: 'string' },
  params: { type: 'string' },
  reason: { type: 'string' },
  duration: { type: 'string' },
  ticket: { type: 'string' },
  param: { type: 'string', multiple: true },
  status: { type: 'string' },
  comment: { type: 'string' },
  server: { type: 'string' },
  json: { type: 'boolean' },
  type: { type: 'string' },
  actor: { type: 'string' },
  request: { type: 'string' },
  since: { type: 'string' },
  until: { type: 'string' },
  amr: { type: 'string', multiple: true },
  hours: { type: 'string' },
  follow: { type: 'boolean', short: 'f' },
  lines: { type: 'string', short: 'n' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'V' },
} as const;

type Options = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>['values'];

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return `pamgate ${pkg.version}`;
}

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (err) {
    const command = argv.find((a) => !a.startsWith('-'));
    const hint = command !== undefined && command in COMMANDS ? `pamgate help ${command}` : 'pamgate help';
    throw new CliError(`${(err as Error).message.split('\n')[0]!.split('. To specify a positional argument')[0]} (see ${hint})`);
  }
  const { values: o, positionals } = parsed;
  const [command, ...rest] = positionals;
  if (o.version) {
    process.stdout.write(version() + '\n');
    return 0;
  }
  if (command === 'help') return help(o.help && rest[0] === undefined ? 'help' : rest[0]);
  if (command === undefined) {
    process.stdout.write(USAGE + '\n');
    return o.help ? 0 : 2;
  }
  if (!(command in COMMANDS)) throw new CliError(`unknown command "${command}" (see pamgate help)`);
  if (o.help) return help(command);
  return run(command, rest, o);
}

function help(command: string | undefined): number {
  if (command === undefined) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const entry = COMMANDS[command];
  if (entry === undefined) throw new CliError(`unknown command "${command}" (see pamgate help)`);
  process.stdout.write(entry.usage + '\n');
  return 0;
}

async function run(command: string, rest: string[], o: Options): Promise<number> {
  const configPath = o.config ?? process.env['PAMGATE_CONFIG'] ?? './policies.yaml';
  switch (command) {
    case 'serve':
      return (await import('./cli/serve.js')).serve(configPath);
    case 'check':
      return (await import('./cli/policy.js')).check(rest[0] ?? configPath);
    case 'explain':
      return (await import('./cli/policy.js')).explainTask(configPath, o);
    case 'token':
      return (await import('./cli/policy.js')).mintToken(configPath, o);
    case 'audit':
      return (await import('./cli/audit.js')).audit(rest, o);
    default:
      return client(command, rest, o);
  }
}

async function client(command: string, rest: string[], o: Options): Promise<number> {
  const { callApi, callApiAllPages, formatAction, print } = await import('./cli/client.js');
  const opts = { server: o.server ?? process.env['PAMGATE_SERVER'] ?? 'http://127.0.0.1:8081', token: process.env['PAMGATE_TOKEN'], json: o.json ?? false };
  switch (command) {
    case 'request': {
      const parameters = Object.fromEntries(
        (o.param ?? []).map((kv) => {
          const eq = kv.indexOf('=');
          if (eq <= 0) throw new CliError(`--param takes K=V, got "${kv}"`);
          return [kv.slice(0, eq), kv.slice(eq + 1)];
        }),
      );
      let durationHours: number | undefined;
      if (o.duration !== undefined) {
        durationHours = Number(o.duration);
        if (o.duration.trim() === '' || !Number.isFinite(durationHours) || durationHours <= 0) throw new CliError(`--duration must be a positive number of hours, got "${o.duration}"`);
      }
      const body = { task: o.task, role: o.role, reason: o.reason, ticket: o.ticket, durationHours, parameters: o.param ? parameters : undefined };
      print(opts, await callApi(opts, 'POST', '/api/requests', body));
      return 0;
    }
    case 'requests':
      // Pages of 200: each answer holds the gateway's event loop (and its proxy) only briefly.
      print(opts, await callApiAllPages(opts, `/api/requests?limit=200${o.status ? `&status=${encodeURIComponent(o.status)}` : ''}`));
      return 0;
    case 'approve':
    case 'deny':
    case 'cancel':
    case 'revoke': {
      const id = rest[0];
      if (!id) throw new CliError(`${command} needs a request id (see pamgate help ${command})`);
      const body = command === 'cancel' ? undefined : o.comment !== undefined ? { comment: o.comment } : {};
      const result = await callApi(opts, 'POST', `/api/requests/${encodeURIComponent(id)}/${command}`, body);
      if (opts.json) print(opts, result);
      else process.stdout.write(formatAction(command, result as Parameters<typeof formatAction>[1]) + '\n');
      return 0;
    }
    default:
      throw new CliError(`unknown command "${command}" (see pamgate help)`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    // One line, no stack and no error class: what went wrong and, where known, what to do.
    const message = err instanceof CliError ? err.message : (err instanceof Error ? err.message : String(err)).split('\n')[0];
    process.stderr.write(`pamgate: ${message}\n`);
    process.exitCode = 1;
  },
);
