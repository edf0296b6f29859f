import type { Env, Hono } from 'hono';
import { UI_CSS, UI_HTML, UI_JS } from './page.js';

const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};

/** The approver page. It needs no server-side session: the page calls /api/* with the approver's token. */
export function mountUi<E extends Env>(app: Hono<E>): void {
  app.get('/ui', (c) => c.body(UI_HTML, 200, { 'content-type': 'text/html; charset=utf-8', ...SECURITY_HEADERS }));
  app.get('/ui/app.js', (c) => c.body(UI_JS, 200, { 'content-type': 'text/javascript; charset=utf-8', ...SECURITY_HEADERS }));
  app.get('/favicon.ico', (c) => c.body(null, 204));
  app.get('/ui/app.css', (c) => c.body(UI_CSS, 200, { 'content-type': 'text/css; charset=utf-8', ...SECURITY_HEADERS }));
}
