/** Small HTTP helpers over real sockets (fetch). */

export interface Reply<T = any> {
  status: number;
  body: T;
}

export async function invoke(proxyUrl: string, cmdlet: string, params: Record<string, unknown> = {}, tok?: string, path = '/adminapi/beta/contoso.onmicrosoft.com/InvokeCommand'): Promise<Reply> {
  return send(`${proxyUrl}${path}`, 'POST', tok, { CmdletInput: { CmdletName: cmdlet, Parameters: params } });
}

export async function api(controlUrl: string, method: 'GET' | 'POST', path: string, tok?: string, body?: unknown): Promise<Reply> {
  return send(`${controlUrl}${path}`, method, tok, body);
}

async function send(url: string, method: string, tok: string | undefined, body: unknown): Promise<Reply> {
  const res = await fetch(url, {
    method,
    headers: { ...(tok ? { authorization: `Bearer ${tok}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.status, body: parsed };
}
