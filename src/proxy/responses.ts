import type { ServerResponse } from 'node:http';

/** Error bodies in the upstream's `{"error":{…}}` shape, telling the caller what to do next. */
export interface GatewayError {
  code: string;
  message: string;
  task?: string;
  policy?: string;
  requestUrl?: string;
}

/** The answer to a gated request while the audit file cannot take its record (fail closed). */
export const AUDIT_UNAVAILABLE: GatewayError = Object.freeze({ code: 'AuditUnavailable', message: 'the audit log cannot be written, so gated tasks are refused (fail closed); try again later' });

export function errorBody(error: GatewayError): Buffer {
  return Buffer.from(JSON.stringify({ error }), 'utf8');
}

export function sendError(res: ServerResponse, status: number, error: GatewayError, extraHeaders?: Record<string, string>): void {
  sendErrorBody(res, status, errorBody(error), extraHeaders);
}

/** Answers with an already serialised error body (a blocked task's 401/403/503 is built once per task, policy and status). */
export function sendErrorBody(res: ServerResponse, status: number, body: Buffer, extraHeaders?: Record<string, string>): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  // A flat [name, value, …] array: node takes it in one pass, without per-call key objects.
  const headers = ['content-type', 'application/json; charset=utf-8', 'content-length', String(body.length), 'cache-control', 'no-store'];
  if (extraHeaders !== undefined) for (const name in extraHeaders) headers.push(name, extraHeaders[name]!);
  res.writeHead(status, headers);
  res.end(body);
}
