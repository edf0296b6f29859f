import type { ServerResponse } from 'node:http';

/** Error bodies in the upstream's `{"error":{…}}` shape, telling the caller what to do next. */
export interface GatewayError {
  code: string;
  message: string;
  task?: string;
  policy?: string;
  requestUrl?: string;
}

export function sendError(res: ServerResponse, status: number, error: GatewayError, extraHeaders?: Record<string, string>): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify({ error: error });
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    ...extraHeaders,
  });
  res.end(body);
}
