import type { Socket } from 'node:net';
import { mayRunCommands } from '../classify/exchange.js';
import { AUDIT_UNAVAILABLE, errorBody } from './responses.js';

/** What a request the HTTP parser refused (a head over the limit, conflicting framing, garbage) is answered with. */
const REFUSALS: Record<string, { status: number; reason: string; code: string; message: string }> = {
  HPE_HEADER_OVERFLOW: { status: 431, reason: 'Request Header Fields Too Large', code: 'RequestHeaderFieldsTooLarge', message: 'the request head is over the size limit' },
  HPE_CHUNK_EXTENSIONS_OVERFLOW: { status: 413, reason: 'Payload Too Large', code: 'RequestTooLarge', message: 'chunk extensions over the size limit' },
  ERR_HTTP_REQUEST_TIMEOUT: { status: 408, reason: 'Request Timeout', code: 'RequestTimeout', message: 'the request did not arrive in time' },
};
const MALFORMED = { status: 400, reason: 'Bad Request', code: 'BadRequest', message: 'the request could not be parsed as HTTP/1.1' };

export interface ClientErrorContext {
  /** Records the refusal of a request that named a command route; false when the audit file cannot take it. */
  auditRefusal(remote: string | null, path: string, reason: string): Promise<boolean>;
  onRefused?(status: number): void;
  /** True when the gateway is already refusing (and recording) the request the parser now fails on. */
  refusedBefore(socket: Socket): boolean;
}

/**
 * The server's 'clientError' handler: what Node would answer, but a request whose request line
 * names a command route is an attempt on a gated task that never reached classification, so it
 * is audited first (on the chunk the parser failed in: a request line split across reads is not
 * recognised, and the request is refused all the same).
 */
export function onClientError(ctx: ClientErrorContext, err: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket: Socket): void {
  // The gateway's own refusal of this request is already under way: it answers once its audit
  // record is durable, and closes the connection; answering here would beat the record.
  if (ctx.refusedBefore(socket)) return;
  const refusal = (err.code !== undefined ? REFUSALS[err.code] : undefined) ?? MALFORMED;
  ctx.onRefused?.(refusal.status);
  const target = requestTarget(err.rawPacket);
  if (target === null || !mayRunCommands({ url: target })) return answer(socket, refusal, err);
  const reason = `${refusal.message} (${err.code ?? 'parse error'})`;
  void ctx.auditRefusal(socket.remoteAddress ?? null, target, reason).then((recorded) =>
    answer(socket, recorded ? refusal : { status: 503, reason: 'Service Unavailable', ...AUDIT_UNAVAILABLE }, err),
  );
}

function answer(socket: Socket, refusal: { status: number; reason: string; code: string; message: string }, err: Error): void {
  // As Node does: no answer once a response on this connection has started (it would corrupt it).
  const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (socket.writable && (inFlight === undefined || inFlight === null || !inFlight.headersSent)) {
    const message = refusal.status === 503 ? refusal.message : `${refusal.message}; the request was not forwarded`;
    const body = errorBody({ code: refusal.code, message });
    socket.write(`HTTP/1.1 ${refusal.status} ${refusal.reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${body.length}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n`);
    socket.write(body);
  }
  socket.destroy(err);
}

/** The request target of the request line the raw bytes start with, or null. */
function requestTarget(raw: Buffer | undefined): string | null {
  if (raw === undefined) return null;
  const end = raw.indexOf('\r\n');
  const line = raw.toString('latin1', 0, end < 0 ? Math.min(raw.length, 8192) : Math.min(end, 8192));
  const m = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+ (\S+) HTTP\/\d\.\d$/.exec(line) ?? /^[!#$%&'*+.^_`|~0-9A-Za-z-]+ (\S+)/.exec(line);
  return m === null ? null : m[1]!;
}
